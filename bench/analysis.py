"""The figures of a bench run, grouped: medians of the rounds with their range, open-loop
percentiles from the rounds' histograms pooled, ratios to the peers, and the targets."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import stats
from bench.records import Measurement, Run, Session
from bench.stats import Spread, spread

__all__ = ["PEERS_TARGETED", "Results", "Target", "targets"]

PEERS_TARGETED = ("nest_emit", "kafkajs", "faststream", "raw_aiokafka")
OURS = "app"
CEILING = "http_only"
SEED_REFERENCE = "kafkajs"
SOAK_SETTLED_S = 30.0  # RSS growth is measured from the first sample after this
NaN = math.nan


def _values(measurements: Iterable[Measurement], get: Callable[[Measurement], float]) -> Spread:
    found: list[float] = []
    for m in measurements:
        try:
            found.append(float(get(m)))
        except (KeyError, TypeError, ZeroDivisionError, ValueError):
            continue
    return spread(found)


def _r(m: Measurement) -> dict[str, Any]:
    if m.result is None:
        raise KeyError("no result")
    return m.result


class Results:
    def __init__(self, run: Run) -> None:
        self.run = run

    def phases(self) -> list[str]:
        return list(dict.fromkeys(s.phase for s in self.run.sessions))

    def contenders(self, phase: str) -> list[str]:
        order = list(dict.fromkeys(s.contender for s in self.run.sessions if s.phase == phase))
        return order

    def sessions(self, phase: str, contender: str) -> list[Session]:
        return [s for s in self.run.sessions if s.phase == phase and s.contender == contender]

    def concurrencies(self, phase: str) -> list[int]:
        found = {
            m.concurrency
            for s in self.run.sessions
            if s.phase == phase
            for m in s.measurements
            if m.concurrency is not None
        }
        return sorted(found)

    def rates(self, phase: str) -> list[int]:
        found = {m.rate for s in self.run.sessions if s.phase == phase for m in s.measurements}
        return sorted(r for r in found if r is not None)

    def serial_counts(self, phase: str) -> list[int]:
        found = {m.requests for s in self.run.sessions if s.phase == phase for m in s.measurements}
        return sorted(r for r in found if r is not None)

    def closed(self, phase: str, contender: str, concurrency: int) -> list[Measurement]:
        """Closed-loop runs at C; at C=1 the longest serial run (the seed's 1,000)."""
        runs = [m for s in self.sessions(phase, contender) for m in s.measurements]
        if concurrency == 1:
            counts = self.serial_counts(phase)
            runs = [m for m in runs if m.kind == "serial" and counts and m.requests == counts[-1]]
        else:
            runs = [m for m in runs if m.kind == "closed" and m.concurrency == concurrency]
        return [m for m in runs if m.result is not None]

    def serial(self, phase: str, contender: str, count: int) -> list[Measurement]:
        return [
            m
            for s in self.sessions(phase, contender)
            for m in s.measurements
            if m.kind == "serial" and m.requests == count and m.result is not None
        ]

    def open(self, phase: str, contender: str, rate: int) -> list[Measurement]:
        return [
            m
            for s in self.sessions(phase, contender)
            for m in s.measurements
            if m.kind == "open" and m.rate == rate and m.result is not None
        ]

    # -- figures --------------------------------------------------------------------------

    def rps(self, phase: str, contender: str, concurrency: int) -> Spread:
        return _values(
            self.closed(phase, contender, concurrency), lambda m: _r(m)["throughput_rps"]
        )

    def latency(self, phase: str, contender: str, concurrency: int, key: str) -> Spread:
        return _values(self.closed(phase, contender, concurrency), lambda m: _r(m)["latency"][key])

    def cpu_ms(self, phase: str, contender: str, concurrency: int) -> Spread:
        return _values(
            self.closed(phase, contender, concurrency), lambda m: m.per_request_ms(m.server_cpu_s)
        )

    def broker_cpu_ms(self, phase: str, contender: str, concurrency: int) -> Spread:
        return _values(
            self.closed(phase, contender, concurrency), lambda m: m.per_request_ms(m.broker_cpu_s)
        )

    def peak_rss_mib(self, phase: str, contender: str, concurrency: int) -> Spread:
        return _values(self.closed(phase, contender, concurrency), lambda m: m.peak_rss_kib / 1024)

    def idle_rss_mib(self, phase: str, contender: str) -> Spread:
        return spread(
            [s.idle_rss_kib / 1024 for s in self.sessions(phase, contender) if s.idle_rss_kib]
        )

    def unexpected(self, phase: str, contender: str) -> int:
        return sum(
            int(m.result.get("non_202", 0)) + int(m.result.get("not_sent", 0))
            for s in self.sessions(phase, contender)
            for m in s.measurements
            if m.result is not None
        )

    def serial_mean(self, phase: str, contender: str, count: int) -> Spread:
        return _values(self.serial(phase, contender, count), lambda m: _r(m)["latency"]["mean_ms"])

    def pooled(self, phase: str, contender: str, rate: int) -> dict[str, float]:
        runs = self.open(phase, contender, rate)
        encoded = [_r(m)["histogram"] for m in runs if m.result and "histogram" in m.result]
        if not encoded:
            return {}
        pooled: dict[str, float] = dict(stats.merged_summary(encoded))
        pooled["achieved_rps"] = spread([_r(m)["achieved_rps"] for m in runs if m.result]).median
        pooled["p99_low"] = min(_r(m)["latency"]["p99_ms"] for m in runs if m.result)
        pooled["p99_high"] = max(_r(m)["latency"]["p99_ms"] for m in runs if m.result)
        return pooled

    def records(self, phase: str, contender: str) -> tuple[int, int | None]:
        """(2xx answers, records written) over every round; None when not counted."""
        sessions = self.sessions(phase, contender)
        answered = sum(s.answered_2xx for s in sessions)
        counted = [s.records for s in sessions]
        if any(c is None for c in counted):
            return answered, None
        return answered, sum(c for c in counted if c is not None)

    def contract(self, contender: str) -> list[str]:
        found: list[str] = []
        for s in self.run.sessions:
            if s.contender == contender:
                found += [d for d in s.contract if d not in found]
        return found

    def errors(self, phase: str, contender: str) -> list[str]:
        found: list[str] = []
        for s in self.sessions(phase, contender):
            found += [s.error] if s.error else []
            found += [m.error for m in s.measurements if m.error]
        return found

    # -- in-process -------------------------------------------------------------------------

    def micro(self, client: str, mode: str, key: str) -> Spread:
        values = [
            float(r.result[mode][key])
            for r in self.run.micro
            if r.client == client and r.result is not None
        ]
        return spread(values)

    # -- soak ------------------------------------------------------------------------------

    def soak_growth(self) -> tuple[float, float, float]:
        """(RSS MiB once settled, RSS MiB at the end, growth as a fraction)."""
        soak = self.run.soak
        if soak is None or not soak.samples:
            return NaN, NaN, NaN
        settled = [kib for t, kib in soak.samples if t >= SOAK_SETTLED_S] or [soak.samples[0][1]]
        first, last = settled[0] / 1024, soak.samples[-1][1] / 1024
        return first, last, (last - first) / first if first else NaN


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    met: bool | None  # None: not measured in this run
    detail: str


def _ratio_text(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs and not math.isnan(ours + theirs) else "-"


def targets(results: Results) -> list[Target]:
    found: list[Target] = []
    misses: list[str] = []
    compared = 0
    for phase in results.phases():
        if OURS not in results.contenders(phase):
            continue
        for c in results.concurrencies(phase):
            ours = results.rps(phase, OURS, c).median
            for peer in PEERS_TARGETED:
                if peer not in results.contenders(phase):
                    continue
                theirs = results.rps(phase, peer, c).median
                compared += 1
                if not ours > theirs:
                    misses.append(f"{phase} C={c} vs {peer} {_ratio_text(ours, theirs)}")
    found.append(
        Target(
            "throughput ahead of Nest emit, kafkajs, FastStream and raw aiokafka at every C and "
            "acks level",
            None if not compared else not misses,
            f"{compared - len(misses)} of {compared} comparisons ahead"
            + (f"; behind: {', '.join(misses)}" if misses else ""),
        )
    )
    found.append(_tail_target(results))
    found += _micro_targets(results)
    found.append(_ceiling_target(results))
    found.append(_serial_target(results))
    first, last, growth = results.soak_growth()
    found.append(
        Target(
            "soak: RSS growth under 5% over 10 minutes",
            None if math.isnan(growth) else growth < 0.05,
            "-" if math.isnan(growth) else f"{first:.1f} -> {last:.1f} MiB ({growth:+.1%})",
        )
    )
    return found


def _tail_target(results: Results) -> Target:
    misses: list[str] = []
    compared = 0
    for phase in results.phases():
        for rate in results.rates(phase):
            ours = results.pooled(phase, OURS, rate)
            for peer in PEERS_TARGETED:
                theirs = results.pooled(phase, peer, rate)
                if not ours or not theirs:
                    continue
                for key in ("p99_ms", "p99_9_ms"):
                    compared += 1
                    if not ours[key] < theirs[key]:
                        figures = f"{ours[key]:.1f} vs {theirs[key]:.1f} ms"
                        misses.append(f"{rate}/s {key[:-3]} vs {peer} ({figures})")
    return Target(
        "p99 and p99.9 below each of them at every offered rate",
        None if not compared else not misses,
        f"{compared - len(misses)} of {compared} below"
        + (f"; not below: {'; '.join(misses)}" if misses else ""),
    )


def _micro_targets(results: Results) -> list[Target]:
    found: list[Target] = []
    for mode in ("sequential", "concurrent"):
        ours = results.micro("facade", mode, "cpu_us_per_message").median
        theirs = results.micro("aiokafka", mode, "cpu_us_per_message").median
        ratio = ours / theirs if theirs and not math.isnan(ours + theirs) else NaN
        found.append(
            Target(
                f"facade CPU per message at most 1.1x raw aiokafka's ({mode})",
                None if math.isnan(ratio) else ratio <= 1.1,
                "-" if math.isnan(ratio) else f"{ours:.0f} vs {theirs:.0f} µs ({ratio:.2f}x)",
            )
        )
    return found


def _ceiling_target(results: Results) -> Target:
    parts: list[str] = []
    met: list[bool] = []
    for phase in results.phases():
        if CEILING not in results.contenders(phase) or OURS not in results.contenders(phase):
            continue
        for c in results.concurrencies(phase):
            ours, ceiling = (
                results.rps(phase, OURS, c).median,
                results.rps(phase, CEILING, c).median,
            )
            if math.isnan(ours + ceiling) or not ceiling:
                continue
            met.append(ours / ceiling >= 0.7)
            parts.append(f"{phase} C={c}: {ours / ceiling:.0%}")
    return Target(
        "HTTP throughput at least 70% of the HTTP ceiling",
        None if not met else all(met),
        ", ".join(parts) or "-",
    )


def _serial_target(results: Results) -> Target:
    parts: list[str] = []
    met: list[bool] = []
    for count in results.serial_counts("main"):
        ours = results.serial_mean("main", OURS, count).median
        theirs = results.serial_mean("main", SEED_REFERENCE, count).median
        if math.isnan(ours + theirs):
            continue
        met.append(ours < theirs)
        parts.append(f"{count} serial: {ours:.2f} vs {theirs:.2f} ms")
    return Target(
        "serial mean below raw kafkajs's",
        None if not met else all(met),
        ", ".join(parts) or "-",
    )


def ratio_rows(
    results: Results, phase: str, others: Sequence[str]
) -> list[tuple[str, list[float]]]:
    """Our throughput over each other contender's, per concurrency of the phase."""
    rows: list[tuple[str, list[float]]] = []
    for other in others:
        if other not in results.contenders(phase):
            continue
        values = []
        for c in results.concurrencies(phase):
            ours, theirs = results.rps(phase, OURS, c).median, results.rps(phase, other, c).median
            values.append(ours / theirs if theirs and not math.isnan(ours + theirs) else NaN)
        rows.append((other, values))
    return rows
