"""Write a bench run: `bench/results/bench-<date>-<HHMM>.json` (every figure), `.md` (the
tables, the targets, the environment), three PNG plots, and the README's benchmark section.

    python -m bench.report bench/results/bench-<date>-<HHMM>.json   # the Markdown, plots again
"""

from __future__ import annotations

import datetime
import math
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench import plan, plots, records
from bench.analysis import OURS, PEERS_TARGETED, Results, ratio_rows, targets
from bench.contenders import CONTENDERS
from bench.records import Run
from bench.stats import Spread
from devtools.kafka import REPO_ROOT

__all__ = ["render", "settings", "write"]

README = REPO_ROOT / "README.md"
LATEST = REPO_ROOT / "bench" / "RESULTS.md"  # the latest full run, without plots, for the docs
DOCS_PLOTS = REPO_ROOT / "docs" / "results"  # the latest full run's plots, for the docs site
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
SEED = {"nest_emit": 2.77, "kafkajs": 3.37, "nest_send": 5.33}  # the seed's means of 32, ms
PLOT_RATE_PREFERRED = 800  # the offered rate whose percentiles the first plot shows


def settings(sizes: plan.Sizes, phases: Sequence[plan.Phase]) -> dict[str, str]:
    return {
        "rounds": f"{sizes.rounds}, contenders interleaved (A B C ..., order rotated each round)",
        "phases": "; ".join(f"`{p.name}`: {p.title}" for p in phases),
        "seed's method": f"mean of {' and of '.join(str(n) for n in sizes.serial)} serial "
        "requests (C=1, after 22 warm-up requests)",
        "closed loop": f"C=1: {sizes.closed_requests_c1} requests; C>1: "
        f"{sizes.closed_duration_s:g} s measured after 20 + 2·C warm-up requests",
        "open loop": f"{', '.join(str(r) for r in sizes.open_rates)} req/s offered; "
        f"{sizes.open_samples:,} samples per rate over the rounds (pooled HDR histograms), "
        f"after {sizes.open_warmup_s:g} s of warm-up; latency from each request's scheduled "
        "start; up to 512 connections",
        "soak": f"this service, {sizes.soak_rate} req/s for {sizes.soak_s:.0f} s, a new "
        "address per request, RSS every 5 s",
        "in-process": f"{sizes.micro_sequential:,} sequential and {sizes.micro_concurrent:,} "
        "publishes from 32 tasks, per client and round",
        "load generator": "bench.loadgen: raw HTTP/1.1 keep-alive client on uvloop, its own "
        "process; every email unique",
        "Python peers": "uvicorn (its defaults: uvloop, httptools), --no-access-log",
        "Node peers": "node bench/peers/node/dist/main.js, NODE_ENV=production, `node:cluster` "
        "for two processes",
        "producers": "acks as the phase says; idempotence with acks=all only; linger 0",
        "topics": "one per contender and phase, 1 partition",
    }


# -- formatting --------------------------------------------------------------------------------


def _num(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _range(s: Spread, digits: int = 0) -> str:
    if math.isnan(s.median):
        return "-"
    low, high = _num(s.low, digits), _num(s.high, digits)
    return _num(s.median, digits) if low == high else f"{_num(s.median, digits)} ({low}-{high})"


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1) -> str:
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- sections ----------------------------------------------------------------------------------


def headline(r: Results) -> str:
    """The main phase: throughput per C and the seed's serial means, one row per contender."""
    cs = r.concurrencies("main")
    counts = r.serial_counts("main")
    header = [
        "contender",
        *[f"mean of {n} serial ms" for n in counts],
        *[f"req/s C={c}" for c in cs],
        *[f"p99 ms C={c}" for c in cs],
        "server CPU ms/req C=32",
    ]
    rows = []
    for name in r.contenders("main"):
        rows.append(
            [
                f"`{name}`",
                *[_range(r.serial_mean("main", name, n), 2) for n in counts],
                *[_range(r.rps("main", name, c)) for c in cs],
                *[_num(r.latency("main", name, c, "p99_ms").median, 1) for c in cs],
                _num(r.cpu_ms("main", name, 32).median, 2),
            ]
        )
    return _table(header, rows)


def ratios(r: Results) -> str:
    header = ["phase", "ours over", *[f"C={c}" for c in (1, 32, 128)]]
    rows = []
    for phase in r.phases():
        if OURS not in r.contenders(phase):
            continue
        others = [*PEERS_TARGETED, "confluent", "confluent_aio", "http_only"]
        for other, values in ratio_rows(r, phase, others):
            label = f"`{other}`" + (" (HTTP ceiling)" if other == "http_only" else "")
            rows.append([phase, label, *[_x(v) for v in values]])
    producer = [
        r.micro("aiokafka", mode, "throughput_mps").median for mode in ("sequential", "concurrent")
    ]
    app_rps = [r.rps("main", OURS, c).median for c in (1, 32)]
    if not any(math.isnan(v) for v in producer + app_rps):
        rows.append(
            [
                "main",
                "raw `send_and_wait` loop, no HTTP (producer ceiling; sequential, 32 tasks)",
                _x(app_rps[0] / producer[0]),
                _x(app_rps[1] / producer[1]),
                "-",
            ]
        )
    return _table(header, rows, text_columns=2)


def phase_table(r: Results, phase: str) -> str:
    header = [
        "contender", "C", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "server CPU ms/req",
        "broker CPU ms/req", "peak RSS MiB", "unexpected answers",
    ]  # fmt: skip
    rows = []
    for c in r.concurrencies(phase):
        for name in r.contenders(phase):
            rows.append(
                [
                    f"`{name}`",
                    str(c),
                    _range(r.rps(phase, name, c)),
                    _range(r.latency(phase, name, c, "p50_ms"), 2),
                    _num(r.latency(phase, name, c, "p99_ms").median, 1),
                    _num(r.latency(phase, name, c, "p99_9_ms").median, 1),
                    _num(r.cpu_ms(phase, name, c).median, 2),
                    _num(r.broker_cpu_ms(phase, name, c).median, 2),
                    _num(r.peak_rss_mib(phase, name, c).median, 1),
                    str(r.unexpected(phase, name)) if c == r.concurrencies(phase)[0] else "",
                ]
            )
    return _table(header, rows, text_columns=1)


def open_table(r: Results, phase: str) -> str:
    header = ["contender", "offered req/s", "achieved req/s", "samples", "p50 ms", "p90 ms",
              "p99 ms (rounds' range)", "p99.9 ms", "max ms"]  # fmt: skip
    rows = []
    for rate in r.rates(phase):
        for name in r.contenders(phase):
            pooled = r.pooled(phase, name, rate)
            if not pooled:
                continue
            p99 = _num(pooled["p99_ms"], 1)
            p99_range = f"{_num(pooled['p99_low'], 1)}-{_num(pooled['p99_high'], 1)}"
            rows.append(
                [
                    f"`{name}`", f"{rate:,}", _num(pooled["achieved_rps"]),
                    f"{int(pooled['count']):,}", _num(pooled["p50_ms"], 2),
                    _num(pooled["p90_ms"], 2), f"{p99} ({p99_range})",
                    _num(pooled["p99_9_ms"], 1), _num(pooled["max_ms"], 1),
                ]
            )  # fmt: skip
    return _table(header, rows)


def accounting(r: Results) -> str:
    header = ["phase", "contender", "2xx answers", "records on its topic", "same", "contract"]
    rows = []
    for phase in r.phases():
        for name in r.contenders(phase):
            answered, written = r.records(phase, name)
            uses_kafka = name != "http_only"
            same = (
                "-"
                if not uses_kafka or written is None
                else ("yes" if written == answered else "**no**")
            )
            deviations = r.contract(name)
            shown = "-" if not uses_kafka or written is None else f"{written:,}"
            verdict = "answers alike" if not deviations else "; ".join(deviations)
            rows.append([phase, f"`{name}`", f"{answered:,}", shown, same, verdict])
    return _table(header, rows, text_columns=2)


def micro_table(r: Results) -> str:
    header = ["client", "mode", "msg/s", "p50 ms", "p99 ms", "CPU µs/msg", "vs aiokafka CPU"]
    rows = []
    for mode in ("sequential", "concurrent"):
        reference = r.micro("aiokafka", mode, "cpu_us_per_message").median
        for client in dict.fromkeys(m.client for m in r.run.micro):
            cpu = r.micro(client, mode, "cpu_us_per_message")
            rows.append(
                [
                    f"`{client}`", mode, _range(r.micro(client, mode, "throughput_mps")),
                    _num(_micro_latency(r, client, mode, "p50_ms"), 2),
                    _num(_micro_latency(r, client, mode, "p99_ms"), 2),
                    _range(cpu), _x(cpu.median / reference if reference else math.nan),
                ]
            )  # fmt: skip
    return _table(header, rows, text_columns=2)


def _micro_latency(r: Results, client: str, mode: str, key: str) -> float:
    values = sorted(
        float(m.result[mode]["latency"][key])
        for m in r.run.micro
        if m.client == client and m.result
    )
    return values[len(values) // 2] if values else math.nan


def soak_section(r: Results) -> str:
    soak = r.run.soak
    if soak is None:
        return "Not run."
    if soak.error:
        return f"Failed: {soak.error}"
    first, last, growth = r.soak_growth()
    peak = max(kib for _, kib in soak.samples) / 1024
    result = soak.result or {}
    latency = result.get("latency", {})
    written = f"{soak.records:,}" if soak.records is not None else "?"
    p50, p99, p999 = (_num(latency.get(k, math.nan), 1) for k in ("p50_ms", "p99_ms", "p99_9_ms"))
    return (
        f"`{soak.contender}` at {soak.rate} req/s offered for {soak.duration_s:.0f} s "
        f"({soak.answered_2xx:,} 2xx answers, {written} records written, "
        f"{result.get('non_202', '?')} unexpected answers; p50 {p50} ms, p99 {p99} ms, "
        f"p99.9 {p999} ms): RSS {first:.1f} MiB once settled "
        f"(after 30 s), {last:.1f} MiB at the end ({growth:+.1%}), highest {peak:.1f} MiB."
    )


def targets_table(r: Results, *, short: bool = False) -> str:
    """The targets; `short` keeps each one's first figure (the count), not every miss."""
    rows = [
        [
            t.name,
            "not measured" if t.met is None else ("met" if t.met else "**missed**"),
            t.detail.split("; ")[0] if short else t.detail,
        ]
        for t in targets(r)
    ]
    return _table(["target", "", "figures"], rows, text_columns=3)


def seed_table(r: Results) -> str:
    counts = r.serial_counts("main")
    header = ["contender", "the seed's mean of 32 ms", *[f"here: mean of {n} ms" for n in counts]]
    rows = []
    for name in ("app", "nest_emit", "kafkajs", "app_reply", "nest_send"):
        if name not in r.contenders("main"):
            continue
        rows.append(
            [f"`{name}`", _num(SEED.get(name, math.nan), 2),
             *[_range(r.serial_mean("main", name, n), 2) for n in counts]]
        )  # fmt: skip
    return _table(header, rows)


def _environment(run: Run) -> str:
    env = _table(["", ""], [[k, v] for k, v in run.environment.items()], text_columns=2)
    versions = _table(["component", "version"], [[k, v] for k, v in run.versions.items()], 2)
    config = _table(["setting", "value"], [[k, v] for k, v in run.settings.items()], 2)
    load = ", ".join(f"{v:.2f}" for v in run.load)
    return (
        f"{env}\n\nLoad average (1 min) before and after: {load}. Whole run: "
        f"{run.duration_s / 60:.0f} min. Command: `{run.command}`.\n\n{versions}\n\n{config}"
    )


def render(r: Results, plot_names: Sequence[str] = ()) -> str:
    run = r.run
    summaries = "\n".join(
        f"| `{c.name}` | {c.summary} |"
        for c in CONTENDERS
        if any(s.contender == c.name for s in run.sessions)
    )
    parts = [
        "# Benchmark: this service next to the seed's NestJS stack and the Python peers",
        f"Written by `{run.command}` (`bench/run.py`); `bench/results/*.json` holds every figure. "
        "Medians of the rounds, with the lowest and highest round in brackets. One 2-core "
        "machine runs the broker(s), the contender and the load generator at once: compare "
        "the contenders with each other, not with other machines.",
        "## Targets\n\n" + targets_table(r),
        "## The contenders\n\n| contender | what it is |\n| --- | --- |\n" + summaries,
        "## Main phase: one broker, acks=all, one server process\n\n" + headline(r),
        "## Ratios: our throughput over each contender's\n\n" + ratios(r),
        "## The seed's method\n\n" + seed_table(r),
        *[f"![{name}]({name})" for name in plot_names],
        *[f"## Phase `{p}`\n\n" + phase_table(r, p) for p in r.phases()],
        *[
            f"## Open loop, phase `{p}`\n\nLatency from each request's scheduled start.\n\n"
            + open_table(r, p)
            for p in r.phases()
            if r.rates(p)
        ],
        "## Soak\n\n" + soak_section(r),
        "## In-process: publishes without HTTP\n\n" + (micro_table(r) if run.micro else "Not run."),
        "## Every request accounted for\n\n" + accounting(r),
        "## Environment\n\n" + _environment(run),
    ]
    return "\n\n".join(parts) + "\n"


def _note(run: Run) -> str:
    env = run.environment
    rounds = len({s.round for s in run.sessions})
    return (
        f"{env.get('date (UTC)', '')}, {env.get('CPUs', '?')} CPUs ({env.get('CPU model', '')}), "
        f"broker on the same machine; medians of {rounds} rounds"
    )


def _plots(r: Results, directory: Path, stem: str) -> list[str]:
    note = _note(r.run)
    names: list[str] = []
    contenders = r.contenders("main")
    rates = r.rates("main")
    if rates:
        rate = PLOT_RATE_PREFERRED if PLOT_RATE_PREFERRED in rates else rates[0]
        rows = []
        for name in contenders:
            if pooled := r.pooled("main", name, rate):
                keys = {"p50": "p50_ms", "p90": "p90_ms", "p99": "p99_ms", "p99.9": "p99_9_ms"}
                rows.append((name, {label: pooled[key] for label, key in keys.items()}))
        names.append(f"{stem}-percentiles.png")
        plots.latency_percentiles(
            directory / names[-1],
            rows,
            title=f"Latency at {rate:,} req/s offered (open loop; one broker, acks=all)",
            note=note,
        )
        series = {}
        for name in contenders:
            points = [
                (float(offered), p["p50_ms"], p["p99_ms"])
                for offered in rates
                if (p := r.pooled("main", name, offered))
            ]
            if points:
                series[name] = points
        names.append(f"{stem}-load.png")
        plots.latency_against_load(
            directory / names[-1],
            series,
            title="Latency against offered load (open loop; one broker, acks=all)",
            note=note,
        )
    throughput: dict[str, dict[int, tuple[float, float, float]]] = {}
    for name in contenders:
        for c in r.concurrencies("main"):
            s = r.rps("main", name, c)
            if not math.isnan(s.median):
                throughput.setdefault(name, {})[c] = (s.median, s.low, s.high)
    names.append(f"{stem}-throughput.png")
    plots.throughput_per_concurrency(
        directory / names[-1],
        throughput,
        title="Throughput per concurrency (closed loop; one broker, acks=all)",
        note=note,
    )
    return names


def _readme_section(r: Results, markdown: str, plot_names: Sequence[str]) -> str:
    run = r.run
    env, v = run.environment, run.versions
    link = f"bench/results/{markdown}"
    shown = ("fastapi", "uvicorn", "aiokafka", "faststream", "confluent-kafka", "node",
             "@nestjs/core", "kafkajs")  # fmt: skip
    versions = ", ".join(f"{name} {v[name]}" for name in shown if name in v)
    rounds = len({s.round for s in run.sessions})
    return "\n\n".join(
        [
            README_START,
            f"`{run.command}` on {env.get('date (UTC)', '')} UTC: {env.get('CPUs', '?')} CPUs "
            f"({env.get('CPU model', '')}), {env.get('Python', '')}, Kafka "
            f"{env.get('Kafka', '')}; {versions}. One broker on the same machine, acks=all "
            f"with idempotence, one server process, medians of {rounds} interleaved rounds "
            f"({run.duration_s / 60:.0f} min in all). Every phase (acks 0 and 1, two "
            f"processes, three brokers), the settings and the versions: [{link}]({link}).",
            headline(r),
            targets_table(r, short=True),
            *[f"![{n}](bench/results/{n})" for n in plot_names],
            README_END,
        ]
    )


def write(run: Run, directory: Path, *, readme: bool) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    # the date and time (UTC) it was written: two runs of one day keep their own files
    stem = f"bench-{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d-%H%M')}"
    data = directory / f"{stem}.json"
    records.save(run, data)
    r = Results(run)
    plot_names = _plots(r, directory, stem)
    markdown = directory / f"{stem}.md"
    markdown.write_text(render(r, plot_names))
    written = [data, markdown, *(directory / n for n in plot_names)]
    if readme:
        LATEST.write_text(render(r))
        written.append(LATEST)
        for name in plot_names:  # bench-<date>-<what>.png -> docs/results/bench-<what>.png
            copy = DOCS_PLOTS / f"bench-{name.removeprefix(stem + '-')}"
            shutil.copyfile(directory / name, copy)
            written.append(copy)
    if readme and README.exists():
        text = README.read_text()
        section = _readme_section(r, markdown.name, plot_names)
        pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
        if pattern.search(text):
            README.write_text(pattern.sub(lambda _: section, text))
            written.append(README)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(args[0])
    r = Results(records.load(path))
    stem = path.stem
    plot_names = _plots(r, path.parent, stem)
    path.with_suffix(".md").write_text(render(r, plot_names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
