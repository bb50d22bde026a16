"""Turn the runs into Markdown: tables (median of the runs and their range), the environment,
and an interpretation computed from the same numbers (so it stays true on every re-run)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Spread, spread

__all__ = ["HttpRun", "MicroRun", "Report", "render"]

NOISY = 0.20  # runs of one scenario differing by more than this, relative to their median
REFERENCE_PEER = "raw_aiokafka"
REFERENCE_CLIENT = "aiokafka"
MODES = ("sequential", "concurrent")

Result = dict[str, Any]


@dataclass(slots=True)
class HttpRun:
    peer: str
    concurrency: int
    repeat: int
    result: Result | None = None
    error: str | None = None
    idle_rss_kib: int | None = None


@dataclass(slots=True)
class MicroRun:
    client: str
    repeat: int
    result: Result | None = None
    error: str | None = None


@dataclass(slots=True)
class Report:
    environment: dict[str, str]
    libraries: dict[str, str]
    settings: dict[str, str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    duration_s: float
    peers: Sequence[tuple[str, str]]  # (name, what it is)
    http: list[HttpRun] = field(default_factory=list)
    micro: list[MicroRun] = field(default_factory=list)


# -- formatting --------------------------------------------------------------------------------


def _num(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _with_range(s: Spread, digits: int = 0) -> str:
    if math.isnan(s.median):
        return "-"
    if _num(s.low, digits) == _num(s.high, digits):
        return _num(s.median, digits)
    return f"{_num(s.median, digits)} ({_num(s.low, digits)}-{_num(s.high, digits)})"


def _ratio(value: float, reference: float) -> str:
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return "-"
    return f"{value / reference:.2f}x"


def _mib(kib: float) -> float:
    return kib / 1024


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1) -> str:
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _collect(results: Iterable[Result], getter: Callable[[Result], float]) -> Spread:
    values = []
    for result in results:
        try:
            values.append(float(getter(result)))
        except (KeyError, TypeError, ZeroDivisionError):
            continue
    return spread(values)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


# -- grouping ----------------------------------------------------------------------------------


class _Http:
    """HTTP runs grouped by (peer, concurrency)."""

    def __init__(self, runs: Sequence[HttpRun]) -> None:
        self.runs = runs
        self.peers = _unique(r.peer for r in runs)
        self.concurrencies = sorted({r.concurrency for r in runs})

    def results(self, peer: str, concurrency: int | None = None) -> list[Result]:
        return [
            r.result
            for r in self.runs
            if r.peer == peer
            and (concurrency is None or r.concurrency == concurrency)
            and r.result is not None
        ]

    def errors(self, peer: str, concurrency: int) -> list[str]:
        return [
            r.error
            for r in self.runs
            if r.peer == peer and r.concurrency == concurrency and r.error is not None
        ]

    def metric(self, peer: str, concurrency: int, getter: Callable[[Result], float]) -> Spread:
        return _collect(self.results(peer, concurrency), getter)

    def rps(self, peer: str, concurrency: int) -> Spread:
        return self.metric(peer, concurrency, lambda r: r["throughput_rps"])

    def p50(self, peer: str, concurrency: int) -> Spread:
        return self.metric(peer, concurrency, lambda r: r["latency"]["p50_ms"])

    def cpu_ms(self, peer: str, concurrency: int) -> Spread:
        return self.metric(
            peer, concurrency, lambda r: r["server"]["cpu_s"] / r["completed"] * 1000
        )

    def broker_cpu_ms(self, peer: str, concurrency: int) -> Spread:
        return self.metric(peer, concurrency, lambda r: r["broker_cpu_s"] / r["completed"] * 1000)

    def idle_rss(self, peer: str) -> Spread:
        return spread(
            [float(r.idle_rss_kib) for r in self.runs if r.peer == peer and r.idle_rss_kib]
        )


class _Micro:
    def __init__(self, runs: Sequence[MicroRun]) -> None:
        self.runs = runs
        self.clients = _unique(r.client for r in runs)

    def results(self, client: str) -> list[Result]:
        return [r.result for r in self.runs if r.client == client and r.result is not None]

    def errors(self, client: str) -> list[str]:
        return [r.error for r in self.runs if r.client == client and r.error is not None]

    def metric(self, client: str, mode: str, getter: Callable[[Result], float]) -> Spread:
        return _collect(self.results(client), lambda r: getter(r[mode]))

    def mps(self, client: str, mode: str) -> Spread:
        return self.metric(client, mode, lambda r: r["throughput_mps"])

    def p50(self, client: str, mode: str) -> Spread:
        return self.metric(client, mode, lambda r: r["latency"]["p50_ms"])

    def cpu_us(self, client: str, mode: str) -> Spread:
        return self.metric(client, mode, lambda r: r["cpu_us_per_message"])


# -- tables ------------------------------------------------------------------------------------


def http_table(http: _Http) -> str:
    header = [
        "peer",
        "C",
        "requests/run",
        "req/s: median (min-max)",
        f"vs {REFERENCE_PEER}",
        "p50 ms: median (min-max)",
        "p95 ms",
        "p99 ms",
        "non-202",
        "server CPU ms/req",
        "broker CPU ms/req",
        "peak RSS MiB",
        "RSS after MiB",
    ]
    rows = []
    for concurrency in http.concurrencies:
        reference = http.rps(REFERENCE_PEER, concurrency).median
        for peer in http.peers:
            results = http.results(peer, concurrency)
            errors = http.errors(peer, concurrency)
            if not results:
                reason = f"all runs failed: {errors[0][:60]}" if errors else "not run"
                rows.append([peer, str(concurrency), "-", reason, *["-"] * 9])
                continue
            rps = http.rps(peer, concurrency)
            bad = sum(int(r["non_202"]) + int(r["not_sent"]) for r in results)
            rows.append(
                [
                    peer,
                    str(concurrency),
                    _num(spread([float(r["requests"]) for r in results]).median),
                    _with_range(rps),
                    _ratio(rps.median, reference),
                    _with_range(http.p50(peer, concurrency), 2),
                    _num(
                        http.metric(peer, concurrency, lambda r: r["latency"]["p95_ms"]).median, 2
                    ),
                    _num(
                        http.metric(peer, concurrency, lambda r: r["latency"]["p99_ms"]).median, 2
                    ),
                    str(bad) + (f" ({len(errors)} runs failed)" if errors else ""),
                    _num(http.cpu_ms(peer, concurrency).median, 2),
                    _num(http.broker_cpu_ms(peer, concurrency).median, 2),
                    _num(
                        _mib(
                            http.metric(
                                peer, concurrency, lambda r: r["server"]["peak_rss_kib"]
                            ).median
                        ),
                        1,
                    ),
                    _num(
                        _mib(
                            http.metric(
                                peer, concurrency, lambda r: r["server"]["rss_after_kib"]
                            ).median
                        ),
                        1,
                    ),
                ]
            )
    return _table(header, rows, text_columns=1)


def memory_table(http: _Http) -> str:
    header = [
        "peer",
        "RSS idle after start-up MiB: median (min-max)",
        "highest peak of any run MiB",
    ]
    rows = []
    for peer in http.peers:
        idle = http.idle_rss(peer)
        peak = _collect(http.results(peer), lambda r: r["server"]["peak_rss_kib"])
        rows.append(
            [
                peer,
                _with_range(Spread(_mib(idle.median), _mib(idle.low), _mib(idle.high)), 1),
                _num(_mib(peak.high), 1),
            ]
        )
    return _table(header, rows)


def micro_table(micro: _Micro) -> str:
    header = [
        "client",
        "mode",
        "C",
        "messages/run",
        "msg/s: median (min-max)",
        f"vs {REFERENCE_CLIENT}",
        "p50 ms: median (min-max)",
        "p95 ms",
        "p99 ms",
        "CPU µs/msg",
        "failed",
        "RSS started MiB",
    ]
    rows = []
    for mode in MODES:
        reference = micro.mps(REFERENCE_CLIENT, mode).median
        for client in micro.clients:
            results = micro.results(client)
            if not results:
                errors = micro.errors(client)
                reason = f"all runs failed: {errors[0][:60]}" if errors else "not run"
                rows.append([client, mode, "-", "-", reason, *["-"] * 7])
                continue
            mps = micro.mps(client, mode)
            rows.append(
                [
                    client,
                    mode,
                    str(results[0][mode]["concurrency"]),
                    _num(spread([float(r[mode]["messages"]) for r in results]).median),
                    _with_range(mps),
                    _ratio(mps.median, reference),
                    _with_range(micro.p50(client, mode), 2),
                    _num(micro.metric(client, mode, lambda r: r["latency"]["p95_ms"]).median, 2),
                    _num(micro.metric(client, mode, lambda r: r["latency"]["p99_ms"]).median, 2),
                    _num(micro.cpu_us(client, mode).median),
                    str(sum(sum(r[mode]["failures"].values()) for r in results)),
                    _num(_mib(_collect(results, lambda r: r["started_rss_kib"]).median), 1),
                ]
            )
    return _table(header, rows, text_columns=2)


# -- interpretation ----------------------------------------------------------------------------


def _times(value: float, reference: float) -> str:
    if math.isnan(value) or math.isnan(reference) or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def _http_notes(http: _Http, micro: _Micro) -> list[str]:
    notes: list[str] = []
    low, high = http.concurrencies[0], http.concurrencies[-1]
    raw = REFERENCE_PEER

    def rps(peer: str, concurrency: int) -> float:
        return http.rps(peer, concurrency).median

    def p50(peer: str, concurrency: int, digits: int = 2) -> str:
        return _num(http.p50(peer, concurrency).median, digits)

    def cpu(peer: str, concurrency: int) -> str:
        return _num(http.cpu_ms(peer, concurrency).median, 2)

    def micro_cpu(client: str, mode: str) -> str:
        return _num(micro.cpu_us(client, mode).median)

    if "http_only" in http.peers:
        notes.append(
            f"**Ceiling without Kafka.** `http_only` (same validation and message, no broker) "
            f"serves {_num(rps('http_only', low))} req/s at C={low} (p50 "
            f"{p50('http_only', low)} ms) and {_num(rps('http_only', high))} req/s at "
            f"C={high}: FastAPI, uvicorn and the load generator alone. Every Kafka peer is "
            "below this line."
        )
    if {"app", raw} <= set(http.peers):
        text = (
            f"**The facade's cost (app vs {raw}).** At C={low}: p50 {p50('app', low)} vs "
            f"{p50(raw, low)} ms, throughput {_times(rps('app', low), rps(raw, low))}. At "
            f"C={high}: throughput {_times(rps('app', high), rps(raw, high))}, server CPU "
            f"{cpu('app', high)} vs {cpu(raw, high)} ms per request."
        )
        if {"facade", REFERENCE_CLIENT} <= set(micro.clients):
            ratio = _times(
                micro.mps("facade", "concurrent").median,
                micro.mps(REFERENCE_CLIENT, "concurrent").median,
            )
            text += (
                f" Without HTTP, `KafkaPublisher.publish` costs "
                f"{micro_cpu('facade', 'sequential')} vs "
                f"{micro_cpu(REFERENCE_CLIENT, 'sequential')} µs CPU per message sequentially "
                f"and {micro_cpu('facade', 'concurrent')} vs "
                f"{micro_cpu(REFERENCE_CLIENT, 'concurrent')} µs concurrently (throughput "
                f"{ratio} of aiokafka's): what `publish` adds to every message (deadline and "
                "attempt timeouts, retry state, error mapping, the receipt model)."
            )
        notes.append(text)
    if {"producer_per_request", raw} <= set(http.peers):
        notes.append(
            f"**One producer per request** is the costly mistake: p50 "
            f"{p50('producer_per_request', low, 1)} ms at C={low} vs {p50(raw, low)} ms with "
            f"one shared producer, and {_num(rps('producer_per_request', high))} vs "
            f"{_num(rps(raw, high))} req/s at C={high} (server CPU "
            f"{cpu('producer_per_request', high)} vs {cpu(raw, high)} ms per request, broker "
            f"CPU {_num(http.broker_cpu_ms('producer_per_request', high).median, 2)} vs "
            f"{_num(http.broker_cpu_ms(raw, high).median, 2)} ms). Each request pays a "
            "bootstrap connection, a metadata request, `InitProducerId` and a close, and the "
            "broker sees a new idempotent producer per message."
        )
    for peer, client, label in (
        ("faststream", "faststream", "FastStream"),
        ("confluent", "confluent", "confluent-kafka"),
    ):
        if not {peer, raw} <= set(http.peers):
            continue
        text = (
            f"**{label}.** Over HTTP: {_times(rps(peer, low), rps(raw, low))} (C={low}) and "
            f"{_times(rps(peer, high), rps(raw, high))} (C={high}) of {raw}'s throughput, "
            f"server CPU {cpu(peer, high)} vs {cpu(raw, high)} ms per request at C={high}."
        )
        if {client, REFERENCE_CLIENT} <= set(micro.clients):
            text += (
                f" Without HTTP: p50 {_num(micro.p50(client, 'sequential').median, 2)} ms "
                f"sequentially (aiokafka "
                f"{_num(micro.p50(REFERENCE_CLIENT, 'sequential').median, 2)}), "
                f"{_num(micro.mps(client, 'concurrent').median)} msg/s concurrently (aiokafka "
                f"{_num(micro.mps(REFERENCE_CLIENT, 'concurrent').median)}), "
                f"{micro_cpu(client, 'concurrent')} µs CPU per message (aiokafka "
                f"{micro_cpu(REFERENCE_CLIENT, 'concurrent')})."
            )
        notes.append(text)
    return notes


def interpretation(report: Report, http: _Http, micro: _Micro) -> list[str]:
    """Bullet points stating what the tables show, with their numbers."""
    notes = _http_notes(http, micro) if http.concurrencies else []
    if "confluent_linger5" in micro.clients:
        notes.append(
            "**librdkafka's default `linger.ms=5`** (`confluent_linger5`) puts a floor under "
            f"latency: p50 {_num(micro.p50('confluent_linger5', 'sequential').median, 2)} ms "
            "per sequential publish; the other confluent rows use `linger.ms=0`, aiokafka's "
            "default."
        )
    idle = {peer: http.idle_rss(peer).median for peer in http.peers}
    known = {peer: kib for peer, kib in idle.items() if not math.isnan(kib)}
    if known:
        lightest, heaviest = min(known, key=known.__getitem__), max(known, key=known.__getitem__)
        baseline = (
            f"; `http_only`, without any Kafka client, idles at "
            f"{_num(_mib(known['http_only']), 1)} MiB: most of it is Python, FastAPI and pydantic"
            if "http_only" in known
            else ""
        )
        notes.append(
            f"**Memory.** Idle server RSS ranges from {_num(_mib(known[lightest]), 1)} MiB "
            f"(`{lightest}`) to {_num(_mib(known[heaviest]), 1)} MiB (`{heaviest}`){baseline}. "
            "The peaks under load are in the HTTP table."
        )
    noisy = []
    for peer in http.peers:
        for concurrency in http.concurrencies:
            s = http.rps(peer, concurrency)
            if s.relative > NOISY:
                noisy.append(f"{peer} C={concurrency} ({s.relative:.0%})")
    for client in micro.clients:
        for mode in MODES:
            s = micro.mps(client, mode)
            if s.relative > NOISY:
                noisy.append(f"micro {client} {mode} ({s.relative:.0%})")
    if noisy:
        spread_text = (
            f"The throughput of these scenarios varied by more than {NOISY:.0%} of the median "
            f"between runs (max-min)/median: {', '.join(noisy)}."
        )
    else:
        spread_text = f"Every scenario's runs stayed within {NOISY:.0%} of their median."
    loads = spread([float(r.result["load_before"]) for r in http.runs if r.result])
    during = (
        f", before each HTTP run {_num(loads.low, 2)}-{_num(loads.high, 2)}"
        if not math.isnan(loads.median)
        else ""
    )
    notes.append(
        f"**Noise.** {spread_text} Load average (1 min) before the bench "
        f"{report.load_before[0]:.2f}{during}, after {report.load_after[0]:.2f}. Differences of "
        "a few percent between peers are within the noise; CPU per request moves less than "
        "throughput from run to run."
    )
    return notes


# -- document ----------------------------------------------------------------------------------


def render(report: Report) -> str:
    http, micro = _Http(report.http), _Micro(report.micro)
    load = ", ".join(f"{v:.2f}" for v in report.load_before)
    load_after = ", ".join(f"{v:.2f}" for v in report.load_after)
    parts = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); see `bench/__init__.py` for what is measured "
        "and how. Each scenario ran "
        f"{report.settings.get('repeats', '?')} times; tables show the median and, in brackets, "
        "the lowest and highest run.",
        "",
        "**Read with care**: one 2-core machine runs the broker (a JVM), the server under test "
        "and the load generator at once, so absolute numbers are low and move from run to run. "
        f"Load average (1, 5, 15 min) before the run: {load}; after: {load_after}.",
        "",
        "## HTTP: `POST /verification-emails`, one uvicorn worker per peer",
        "",
        "C = concurrent connections of the load generator. Latency is per request at the "
        "client; server CPU, peak RSS (`VmHWM`, reset before each run) and RSS after are of the "
        "server process during the measured requests, broker CPU is the broker JVM's over the "
        "same requests.",
        "",
        http_table(http),
        "",
        "| peer | what it is |",
        "| --- | --- |",
        *[f"| {name} | {summary} |" for name, summary in report.peers],
        "",
        "### Memory of the server process",
        "",
        memory_table(http),
        "",
        "## In-process: publishes without HTTP",
        "",
        "`sequential`: one publish at a time; `concurrent`: C tasks publishing at once. CPU is "
        "the whole process's (librdkafka's threads included) per acknowledged message. RSS "
        "started: the process once its client is connected (interpreter, library, client).",
        "",
        micro_table(micro),
        "",
        "## Interpretation",
        "",
        *[f"- {note}" for note in interpretation(report, http, micro)],
        "- acks=all on a one-node broker waits for the leader only: with replicas every "
        "acknowledgement also waits for the followers, which adds latency to every peer alike.",
        "",
        "## Environment",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in report.environment.items()],
        f"| bench duration | {report.duration_s:.0f} s |",
        "",
        "| library | version |",
        "| --- | --- |",
        *[f"| {name} | {version} |" for name, version in report.libraries.items()],
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in report.settings.items()],
        "",
    ]
    return "\n".join(parts)
