"""Small statistics used by the load generator, the micro benchmark and the report.

Latency histograms are HdrHistograms (`hdrhistogram`, module `hdrh`) of microseconds from
1 µs to 60 s at 3 significant digits: every recorded value is kept within 0.1 %, and
histograms of several runs pool exactly (`merge_histograms`), which percentiles of
percentiles cannot. `encode_histogram` gives the compressed base64 text that the load
generator puts in its JSON.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

__all__ = [
    "HISTOGRAM_HIGHEST_US",
    "HISTOGRAM_LOWEST_US",
    "Spread",
    "encode_histogram",
    "histogram_summary",
    "latency_summary",
    "merge_histograms",
    "merged_summary",
    "new_histogram",
    "percentile",
    "record_seconds",
    "spread",
]

HISTOGRAM_LOWEST_US = 1
HISTOGRAM_HIGHEST_US = 60_000_000  # 60 s
HISTOGRAM_DIGITS = 3


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of an ascending sequence; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds."""
    ordered = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else math.nan,
        "mean_ms": statistics.fmean(ordered) if ordered else math.nan,
    }


@dataclass(frozen=True, slots=True)
class Spread:
    """Median of repeated runs, their range, and the range relative to the median."""

    median: float
    low: float
    high: float

    @property
    def relative(self) -> float:
        return (self.high - self.low) / self.median if self.median else math.nan


def spread(values: Sequence[float]) -> Spread:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return Spread(math.nan, math.nan, math.nan)
    return Spread(statistics.median(finite), min(finite), max(finite))


# `HdrHistogram` is untyped: these helpers are the typed face the benchmarks use.
Histogram = Any


def new_histogram() -> Histogram:
    """An empty latency histogram: microseconds, 1 µs to 60 s, 3 significant digits."""
    return HdrHistogram(HISTOGRAM_LOWEST_US, HISTOGRAM_HIGHEST_US, HISTOGRAM_DIGITS)


def record_seconds(histogram: Histogram, seconds: float) -> None:
    """Record one latency; values outside 1 µs..60 s are clamped to the range's ends."""
    micros = round(seconds * 1_000_000)
    histogram.record_value(min(max(micros, HISTOGRAM_LOWEST_US), HISTOGRAM_HIGHEST_US))


def encode_histogram(histogram: Histogram) -> str:
    """The compressed base64 encoding (HdrHistogram's `encode()`), as text for JSON."""
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def merge_histograms(encoded: Iterable[str | bytes]) -> Histogram:
    """One histogram holding every value of the encoded ones (runs pooled, not averaged)."""
    merged = new_histogram()
    for item in encoded:
        merged.add(HdrHistogram.decode(item.encode("ascii") if isinstance(item, str) else item))
    return merged


def histogram_summary(histogram: Histogram) -> dict[str, float]:
    """p50/p90/p95/p99/p99.9/max/mean in milliseconds (NaN when empty), and the count."""
    count = int(histogram.get_total_count())
    if count == 0:
        nan = math.nan
        return {
            "p50_ms": nan,
            "p90_ms": nan,
            "p95_ms": nan,
            "p99_ms": nan,
            "p99_9_ms": nan,
            "max_ms": nan,
            "mean_ms": nan,
            "count": 0,
        }

    def at(q: float) -> float:
        return float(histogram.get_value_at_percentile(q)) / 1000

    return {
        "p50_ms": at(50),
        "p90_ms": at(90),
        "p95_ms": at(95),
        "p99_ms": at(99),
        "p99_9_ms": at(99.9),
        "max_ms": float(histogram.get_max_value()) / 1000,
        "mean_ms": float(histogram.get_mean_value()) / 1000,
        "count": count,
    }


def merged_summary(encoded: Iterable[str | bytes]) -> dict[str, float]:
    """`histogram_summary` of the pooled histograms (e.g. the rounds of one scenario)."""
    return histogram_summary(merge_histograms(encoded))
