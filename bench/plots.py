"""PNG charts of benchmark results (matplotlib, Agg backend: no display needed).

Each function writes one chart of about 1000 px wide (10 x 5.6 inches at 100 dpi) with a
title, axis labels with their units, a legend and a footnote line (`note`, e.g. the machine
and the date of the run). Contenders keep the same colour in every chart of one call, in the
order they are given.

- `latency_percentiles`: p50/p90/p99/p99.9 per contender, grouped bars on a log axis.
- `latency_against_load`: p99 (solid) and p50 (dashed) against the offered rate, per
  contender, log latency axis: where a curve turns up is where that contender saturates.
- `throughput_per_concurrency`: median requests per second per concurrency, per contender,
  with the lowest and highest run as error bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

__all__ = ["latency_against_load", "latency_percentiles", "throughput_per_concurrency"]

PERCENTILES = ("p50", "p90", "p99", "p99.9")
_SIZE_IN = (10.0, 5.6)
_DPI = 100


def _figure() -> tuple[Figure, Axes]:
    figure, axes = plt.subplots(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    axes.grid(axis="y", which="major", alpha=0.35)
    axes.set_axisbelow(True)
    return figure, axes


def _milliseconds(value: float, _: object = None) -> str:
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def _finish(figure: Figure, axes: Axes, path: Path, *, title: str, note: str) -> None:
    axes.set_title(title, fontsize=13, loc="left")
    if note:
        figure.supxlabel(note, fontsize=8, color="0.35", x=0.01, ha="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _colours(count: int) -> list[tuple[float, float, float, float]]:
    palette = plt.get_cmap("tab10")
    return [palette(i % 10) for i in range(count)]


def _positive(value: float) -> bool:
    return value > 0 and math.isfinite(value)


def latency_percentiles(
    path: Path,
    rows: Sequence[tuple[str, Mapping[str, float]]],
    *,
    title: str,
    note: str,
) -> None:
    """Grouped bars: one group per percentile (p50, p90, p99, p99.9), one bar per
    contender; `rows` is [(contender, {"p50": ms, "p90": ms, "p99": ms, "p99.9": ms})].
    A missing, zero or NaN value leaves a gap (a log axis cannot show it)."""
    figure, axes = _figure()
    count = max(1, len(rows))
    width = 0.8 / count
    colours = _colours(len(rows))
    for index, (name, values) in enumerate(rows):
        xs: list[float] = []
        heights: list[float] = []
        for group, percentile in enumerate(PERCENTILES):
            value = values.get(percentile, math.nan)
            if _positive(value):
                xs.append(group - 0.4 + width * (index + 0.5))
                heights.append(value)
        bars = axes.bar(xs, heights, width=width * 0.92, label=name, color=colours[index])
        if count <= 6:
            axes.bar_label(
                bars, labels=[_short(v) for v in heights], fontsize=7, padding=2, rotation=90
            )
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(_milliseconds))
    axes.set_xticks(range(len(PERCENTILES)), PERCENTILES)
    axes.set_xlabel("latency percentile")
    axes.set_ylabel("latency (ms, log scale)")
    axes.margins(y=0.15)
    axes.legend(title="contender", fontsize=9, ncols=2 if len(rows) > 4 else 1)
    _finish(figure, axes, path, title=title, note=note)


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def latency_against_load(
    path: Path,
    series: Mapping[str, Sequence[tuple[float, float, float]]],
    *,
    title: str,
    note: str,
) -> None:
    """One colour per contender: p99 (solid, dots) and p50 (dashed) against the offered
    rate; `series` is {contender: [(offered req/s, p50 ms, p99 ms), ...]}."""
    figure, axes = _figure()
    axes.grid(axis="x", alpha=0.35)
    for colour, (name, points) in zip(_colours(len(series)), series.items(), strict=True):
        ordered = sorted(p for p in points if _positive(p[1]) and _positive(p[2]))
        rates = [p[0] for p in ordered]
        axes.plot(rates, [p[2] for p in ordered], "-o", color=colour, label=f"{name} p99")
        axes.plot(
            rates, [p[1] for p in ordered], "--", color=colour, alpha=0.8, label=f"{name} p50"
        )
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(_milliseconds))
    axes.set_xlabel("offered load (requests per second, open loop)")
    axes.set_ylabel("latency from scheduled start (ms, log scale)")
    axes.set_xlim(left=0)
    axes.legend(fontsize=9, ncols=2 if len(series) > 3 else 1)
    _finish(figure, axes, path, title=title, note=note)


def throughput_per_concurrency(
    path: Path,
    series: Mapping[str, Mapping[int, tuple[float, float, float]]],
    *,
    title: str,
    note: str,
) -> None:
    """Grouped bars: one group per concurrency C, one bar per contender, the median run's
    requests per second with the lowest and highest run as an error bar; `series` is
    {contender: {C: (median, min, max)}}."""
    figure, axes = _figure()
    levels = sorted({c for by_level in series.values() for c in by_level})
    count = max(1, len(series))
    width = 0.8 / count
    for index, (colour, (name, by_level)) in enumerate(
        zip(_colours(len(series)), series.items(), strict=True)
    ):
        xs: list[float] = []
        medians: list[float] = []
        below: list[float] = []
        above: list[float] = []
        for group, level in enumerate(levels):
            if level not in by_level:
                continue
            median, low, high = by_level[level]
            if not math.isfinite(median):
                continue
            xs.append(group - 0.4 + width * (index + 0.5))
            medians.append(median)
            below.append(max(0.0, median - low) if math.isfinite(low) else 0.0)
            above.append(max(0.0, high - median) if math.isfinite(high) else 0.0)
        axes.bar(
            xs,
            medians,
            width=width * 0.92,
            color=colour,
            label=name,
            yerr=[below, above],
            capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "0.2"},
        )
    axes.set_xticks(range(len(levels)), [f"C={c}" for c in levels])
    axes.set_xlabel("concurrency (closed loop: requests in flight)")
    axes.set_ylabel("throughput (requests per second)")
    axes.set_ylim(bottom=0)
    axes.margins(y=0.1)
    axes.legend(title="contender (bar: median, whisker: min-max)", fontsize=9)
    _finish(figure, axes, path, title=title, note=note)
