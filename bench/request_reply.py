"""`python -m bench.request_reply`: round-trip latency of emit and request-reply, side by side.

The two messaging styles of `POST /verification-emails`:

- `emit`: `POST /verification-emails` answers `202` once Kafka acknowledged the event;
- `request-reply`: `POST /verification-emails?wait_for=delivery` publishes the event with reply
  headers; the worker (`python -m app.worker`, `SMTP__BACKEND=log`) consumes it, "sends" the
  email, records it as handled and produces a reply on the reply topic; the API reads the
  reply and answers `200` with it.

Steps (each bounded in time; everything runs on 127.0.0.1):
1. Start a one-node Kafka broker with `devtools.kafka.KafkaCluster` on free ports in a
   temporary directory; create the verification topic (1 partition). The API creates the
   reply topic itself at start-up (its defaults: 3 partitions, replication capped at 1).
2. Start the API (`python -m app`) and the worker (`python -m app.worker`) as subprocesses
   with a temporary SQLite store; wait for `GET /health/ready`, then until one
   request-reply round trip succeeds (the worker has joined its group).
3. For each (style, concurrency) in (emit, 1), (request-reply, 1), (emit, 16),
   (request-reply, 16): a warm-up run, then the measured run, each with `bench.loadgen`
   (`--client httpx`, its own process, one keep-alive connection per concurrent worker, a
   unique email per request, latency of every request from before it is written to the end
   of its response). The CPU time of the API, the worker and the broker over the measured
   run is read from `/proc`.
4. Stop the worker, the API and the broker (also on errors or SIGTERM); print the Markdown
   report and write it to `bench/REQUEST_REPLY.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from bench import environment, procfs
from bench.harness import (
    HOST,
    STOP_TIMEOUT_S,
    create_topics,
    free_port,
    log,
    log_tail,
    run_json,
    terminate,
)
from devtools.kafka import REPO_ROOT, KafkaCluster
from devtools.processes import stop_process

RESULTS_PATH = Path(__file__).resolve().parent / "REQUEST_REPLY.md"
VERIFICATION_TOPIC = "bench.request-reply.verification"
REPLY_TOPIC = "bench.request-reply.reply"
CONCURRENCY = 16
READY_TIMEOUT_S = 60.0  # API start-up until /health/ready
FIRST_REPLY_TIMEOUT_S = 90.0  # until the worker answers a first request
RUN_DEADLINE_S = 120.0  # a load run stops starting requests after this
REQUEST_TIMEOUT_S = 15.0  # per request; the API's own reply timeout is REPLY__TIMEOUT_MS=10 s
DRAIN_TIMEOUT_S = 120.0  # until the worker has handled every event before a run
WORKER_GROUP = "bench-request-reply-worker"
# What ends one measured run (the others still run) rather than the whole bench.
RunFailed: tuple[type[Exception], ...] = (
    RuntimeError,
    ValueError,
    IndexError,
    OSError,
    subprocess.SubprocessError,
    KafkaError,
)
BreakdownFailed: tuple[type[Exception], ...] = (*RunFailed, httpx.HTTPError, KeyError)
LIBRARIES = ("fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "aiokafka", "httpx")


@dataclass(frozen=True, slots=True)
class Style:
    name: str
    query: str
    expected_status: int
    what: str


STYLES = (
    Style("emit", "", 202, "202 once Kafka acknowledged the event (acks=all, idempotent)"),
    Style(
        "request-reply",
        "?wait_for=delivery",
        200,
        "200 once the worker sent the email and its reply was read from the reply topic",
    ),
)


@dataclass(frozen=True, slots=True)
class Plan:
    requests: int  # per measured run, at every concurrency
    concurrencies: tuple[int, ...]

    def warmup(self, concurrency: int) -> int:
        return min(max(self.requests // 2, 1), 20 + 2 * concurrency)


@dataclass(slots=True)
class Run:
    style: Style
    concurrency: int
    result: dict[str, Any] | None = None
    worker_cpu_s: float | None = None
    dead_letters: int = 0
    error: str | None = None

    @property
    def non_2xx(self) -> int:
        """Answers outside 2xx, timeouts, transport errors and requests never sent."""
        if self.result is None:
            return 0
        outcomes: dict[str, int] = self.result["outcomes"]
        failed = sum(n for key, n in outcomes.items() if not (key.isdigit() and key[0] == "2"))
        return failed + int(self.result["not_sent"])

    @property
    def unexpected(self) -> int:
        """2xx answers other than the style's own (202 for emit, 200 for request-reply)."""
        if self.result is None:
            return 0
        outcomes: dict[str, int] = self.result["outcomes"]
        return sum(
            n
            for key, n in outcomes.items()
            if key.isdigit() and key[0] == "2" and int(key) != self.style.expected_status
        )


# -- processes ---------------------------------------------------------------------------------


def service_env(bootstrap_servers: str, store: Path, port: int) -> dict[str, str]:
    """The environment shared by the API and the worker."""
    return {
        **os.environ,
        "API__HOST": HOST,
        "API__PORT": str(port),
        "API__LOG_LEVEL": "warning",  # no access log line per request
        "KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
        "STORE__URL": f"sqlite+aiosqlite:///{store}",  # four slashes: an absolute path
        "VERIFICATION__TOPIC": VERIFICATION_TOPIC,
        "REPLY__TOPIC": REPLY_TOPIC,
        "SMTP__BACKEND": "log",
        "WORKER__LOG_LEVEL": "warning",
        "WORKER__GROUP_ID": WORKER_GROUP,
    }


@contextlib.contextmanager
def started(name: str, module: str, env: dict[str, str], log_path: Path) -> Iterator[int]:
    """Run `python -m module` until the block ends (SIGTERM, then SIGKILL); yields its pid."""
    with log_path.open("ab") as out:
        # argv of this interpreter and a fixed module; no shell.
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", module],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_tail(log_path)}")
        yield process.pid
    finally:
        stopping = time.monotonic()
        stop_process(process, name, timeout_s=STOP_TIMEOUT_S)
        log(f"  {name} stopped in {time.monotonic() - stopping:.1f}s")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def wait_ready(base: str, pids: dict[str, int], logs: dict[str, Path]) -> None:
    """Until `/health/ready` answers 200, then until one request-reply round trip succeeds."""
    body = {"email": "bench-first-reply@example.com", "redirect_url": "https://example.com/v"}
    for what, url, limit_s in (
        ("the API ready", f"{base}/health/ready", READY_TIMEOUT_S),
        ("a first reply", f"{base}/verification-emails?wait_for=delivery", FIRST_REPLY_TIMEOUT_S),
    ):
        began = time.monotonic()
        while True:
            for name, pid in pids.items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} exited:\n{log_tail(logs[name])}")
            with contextlib.suppress(httpx.HTTPError):
                if url.endswith("/ready"):
                    status = httpx.get(url, timeout=2.0).status_code
                else:
                    status = httpx.post(url, json=body, timeout=REQUEST_TIMEOUT_S).status_code
                if status in (200, 202):
                    break
            if time.monotonic() - began > limit_s:
                raise RuntimeError(f"no {what} within {limit_s:.0f}s")
            time.sleep(0.2)
        log(f"  {what} after {time.monotonic() - began:.1f}s")


async def _lag(bootstrap_servers: str) -> int:
    """Events on the verification topic the worker has not committed yet."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    tp = TopicPartition(VERIFICATION_TOPIC, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)
    try:
        async with asyncio.timeout(30):
            await admin.start()
            await consumer.start()
            end: int = (await consumer.end_offsets([tp]))[tp]
            committed = (await admin.list_consumer_group_offsets(WORKER_GROUP)).get(tp)
    finally:
        await consumer.stop()
        await admin.close()
    return end - (committed.offset if committed is not None else 0)


def wait_drained(bootstrap_servers: str) -> None:
    """Until the worker has handled every event so far (emit's too): runs do not overlap."""
    began = time.monotonic()
    while (lag := asyncio.run(_lag(bootstrap_servers))) > 0:
        if time.monotonic() - began > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"the worker still had {lag} events after {DRAIN_TIMEOUT_S:.0f}s")
        time.sleep(0.5)
    if time.monotonic() - began > 1:
        log(f"  worker caught up in {time.monotonic() - began:.1f}s")


# -- load --------------------------------------------------------------------------------------


def _dead_letters(worker_log: Path) -> int:
    with contextlib.suppress(OSError):
        return worker_log.read_text(errors="replace").count("dead-lettering")
    return 0


def _loadgen(url: str, requests: int, concurrency: int, tag: str, pids: dict[str, int]) -> Any:
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        "--client",
        "httpx",
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--deadline-s",
        str(RUN_DEADLINE_S),
        "--timeout-s",
        str(REQUEST_TIMEOUT_S),
        "--server-pid",
        str(pids["api"]),
        "--tag",
        tag,
    ]
    if "broker" in pids:
        command += ["--broker-pid", str(pids["broker"])]
    return run_json(command, timeout_s=RUN_DEADLINE_S + 2 * REQUEST_TIMEOUT_S + 30)


def measure(
    plan: Plan, base: str, servers: str, pids: dict[str, int], worker_log: Path, t0: float
) -> list[Run]:
    runs: list[Run] = []
    for concurrency in plan.concurrencies:
        for style in STYLES:
            run = Run(style, concurrency)
            runs.append(run)
            url = f"{base}/verification-emails{style.query}"
            tag = f"{style.name}-c{concurrency}-{os.getpid()}"
            try:
                wait_drained(servers)
                _loadgen(url, plan.warmup(concurrency), concurrency, f"{tag}-warmup", pids)
                wait_drained(servers)
                letters_before = _dead_letters(worker_log)
                worker_before = procfs.cpu_seconds(pids["worker"])
                run.result = _loadgen(url, plan.requests, concurrency, tag, pids)
                run.worker_cpu_s = procfs.cpu_seconds(pids["worker"]) - worker_before
                run.dead_letters = _dead_letters(worker_log) - letters_before
            except RunFailed as exc:
                run.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log(f"  {style.name} C={concurrency}: {run.error}")
                continue
            latency = run.result["latency"]
            log(
                f"[{time.monotonic() - t0:5.0f}s] {style.name:<13} C={concurrency:<3} "
                f"{run.result['throughput_rps']:7.0f} req/s, p50 {latency['p50_ms']:7.2f} ms, "
                f"p99 {latency['p99_ms']:7.2f} ms, non-2xx {run.non_2xx}"
            )
    return runs


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Medians (ms) of sequential request-reply round trips cut at the message's timestamps."""

    samples: int
    total_ms: float
    to_producer_ms: float  # client sends -> the API's producer stamps the request (CreateTime)
    publish_ms: float  # the API's publish, until acks=all (the receipt's elapsed_ms)
    worker_ms: float  # CreateTime -> the worker's handled_at (fetched, checked, sent, recorded)
    reply_ms: float  # handled_at -> the client has the response (reply produced, read, answered)


def breakdown(base: str, count: int) -> Breakdown:
    """`count` sequential request-reply round trips, each cut in three by wall-clock stamps.

    The request's timestamp is the API producer's CreateTime (milliseconds) and the reply's
    `handled_at` is taken by the worker after the email and its database record, just before
    the reply is produced; all processes share this machine's clock.
    """
    url = f"{base}/verification-emails?wait_for=delivery"
    total, to_producer, publish, worker, reply = [], [], [], [], []
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for number in range(count):
            body = {
                "email": f"bench-breakdown-{os.getpid()}-{number}@example.com",
                "redirect_url": "https://app.example.com/verify",
            }
            sent_wall, sent = time.time(), time.perf_counter()
            response = client.post(url, json=body)
            elapsed, done_wall = time.perf_counter() - sent, time.time()
            if response.status_code != 200:
                continue
            answer = response.json()
            created_s = answer["receipt"]["timestamp"] / 1000
            handled_s = datetime.fromisoformat(answer["reply"]["handled_at"]).timestamp()
            total.append(elapsed * 1000)
            to_producer.append((created_s - sent_wall) * 1000)
            publish.append(float(answer["receipt"]["elapsed_ms"]))
            worker.append((handled_s - created_s) * 1000)
            reply.append((done_wall - handled_s) * 1000)
    if not total:
        raise RuntimeError("no request-reply round trip succeeded")
    median = statistics.median
    return Breakdown(
        len(total),
        median(total),
        median(to_producer),
        median(publish),
        median(worker),
        median(reply),
    )


# -- report ------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.2f}"


def _per_request_ms(seconds: float | None, run: Run) -> str:
    if seconds is None or run.result is None or not run.result["completed"]:
        return "-"
    return f"{seconds * 1000 / run.result['completed']:.2f}"


def table(runs: Sequence[Run]) -> str:
    header = [
        "style",
        "C",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "req/s",
        "non-2xx",
        "API CPU ms/req",
        "worker CPU ms/req",
        "broker CPU ms/req",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in header[1:]) + " |",
    ]
    for run in runs:
        if run.result is None:
            cells = [run.style.name, str(run.concurrency), "-", f"failed: {run.error}"]
            cells += ["-"] * (len(header) - len(cells))
        else:
            r, latency = run.result, run.result["latency"]
            cells = [
                run.style.name,
                str(run.concurrency),
                f"{r['completed']:,}",
                _ms(latency["p50_ms"]),
                _ms(latency["p95_ms"]),
                _ms(latency["p99_ms"]),
                _ms(latency["max_ms"]),
                f"{r['throughput_rps']:,.0f}",
                str(run.non_2xx),
                _per_request_ms(r["server"].get("cpu_s"), run),
                _per_request_ms(run.worker_cpu_s, run),
                _per_request_ms(r["broker_cpu_s"], run),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _find(runs: Sequence[Run], style: str, concurrency: int) -> dict[str, Any] | None:
    for run in runs:
        if run.style.name == style and run.concurrency == concurrency:
            return run.result
    return None


def breakdown_section(split: Breakdown | None) -> list[str]:
    if split is None:
        return []
    rows = [
        ("client sends -> the API's producer stamps the request", split.to_producer_ms),
        (
            "request stamped -> worker's `handled_at` (request written, fetched by the worker, "
            "duplicate check, email, `handled_events` insert)",
            split.worker_ms,
        ),
        (
            "`handled_at` -> response at the client (reply produced with acks=all, read by "
            "the API's reply reader, HTTP answer)",
            split.reply_ms,
        ),
        ("whole round trip at the client", split.total_ms),
        ("(for reference: the API's publish until acks=all, `elapsed_ms`)", split.publish_ms),
    ]
    return [
        "## Where request-reply's time goes",
        "",
        f"{split.samples} further sequential request-reply round trips (after the runs above), "
        "each cut at the request's timestamp (the API producer's CreateTime, whole "
        "milliseconds) and the reply's `handled_at` (taken by the worker after the email and "
        "its database record, just before producing the reply); all processes read the same "
        "clock. Medians of each part, so they need not add up exactly. Sent by a synchronous "
        "httpx client in the bench's own process, at another moment than the table's "
        "request-reply C=1 row: compare the parts with each other, and the whole with that "
        "row only loosely.",
        "",
        "| part | median ms |",
        "| --- | ---: |",
        *[f"| {name} | {value:.2f} |" for name, value in rows],
        "",
    ]


def interpretation(runs: Sequence[Run], split: Breakdown | None) -> list[str]:
    notes: list[str] = []
    emit1, rr1 = _find(runs, "emit", 1), _find(runs, "request-reply", 1)
    emit_c, rr_c = _find(runs, "emit", CONCURRENCY), _find(runs, "request-reply", CONCURRENCY)
    if emit1 and rr1:
        e, r = emit1["latency"], rr1["latency"]
        notes.append(
            f"One request at a time, request-reply takes {_ms(r['p50_ms'])} ms at the median "
            f"against {_ms(e['p50_ms'])} ms for emit: {_ms(r['p50_ms'] - e['p50_ms'])} ms "
            f"more ({r['p50_ms'] / e['p50_ms']:.1f}x); at p99 {_ms(r['p99_ms'])} against "
            f"{_ms(e['p99_ms'])} ms. The emit part (validation, the publish with acks=all, the "
            "broker's acknowledgement) is the same in both; the difference is the rest of the "
            "round trip."
        )
    measured = (
        f" Measured on {split.samples} round trips (section above): "
        f"{split.to_producer_ms:.2f} ms until the API's producer has the request, "
        f"{split.worker_ms:.2f} ms from there to the worker's `handled_at` (steps 1-3), "
        f"{split.reply_ms:.2f} ms from `handled_at` to the response at the client "
        f"(steps 4-5 and the HTTP answer); the API's own publish until acks=all took "
        f"{split.publish_ms:.2f} ms, and the worker's fetch runs alongside its last part."
        if split is not None
        else ""
    )
    notes.append(
        "What the rest is, in order: (1) the worker's fetch: it waits in a long poll "
        "(`getmany`, one record at a time) that the broker answers as soon as the request "
        "is written, so there is no polling interval to wait out, only the fetch response "
        "and its decoding; (2) the handling: a SQLite read (is this event id already "
        "handled?) and, after the email, a SQLite insert into `handled_events` committed to "
        "disk; (3) the email itself, nearly free with `SMTP__BACKEND=log` (a real SMTP "
        "server adds its connection and dialogue on top); (4) the reply's produce with "
        "acks=all by an idempotent producer, a second broker round trip and log append; "
        "(5) the API's reply reader, a group-less consumer long-polling every partition of "
        "the reply topic, whose fetch returns the reply and completes the waiting "
        "request's future. The worker commits the offset after replying, so the commit is "
        "not in the request's latency but is in the worker's time per record." + measured
    )
    if rr_c and emit_c:
        per_record_ms = 1000 / rr_c["throughput_rps"] if rr_c["throughput_rps"] else float("nan")
        notes.append(
            f"At C={CONCURRENCY}, emit serves {emit_c['throughput_rps']:,.0f} req/s "
            f"(p50 {_ms(emit_c['latency']['p50_ms'])} ms) and request-reply "
            f"{rr_c['throughput_rps']:,.0f} req/s (p50 {_ms(rr_c['latency']['p50_ms'])} ms). "
            "One worker handles one record at a time and commits it before reading the next, "
            f"so request-reply's throughput is the worker's rate, {per_record_ms:.2f} ms per "
            "record here (handling, reply, commit); concurrent requests queue behind each "
            "other in the partition and their latency is that queue. More throughput needs "
            "more partitions and workers (one record in flight per partition), not a faster "
            "API."
        )
    notes.append(
        "The CPU columns are over the measured run only, divided by its completed requests. "
        "Request-reply costs CPU in three processes instead of two: the worker's share is "
        "the fetch, SQLite, the log line, the reply's produce and the commit; the API's grows "
        "by the reply reader's fetches; the broker writes and serves two records instead of "
        "one, and the offset commit."
    )
    notes.append(
        "Request-reply holds an HTTP request, a connection and a waiter open for the whole "
        "round trip and fails with 504 when the worker is slow or down (after "
        "`REPLY__TIMEOUT_MS`), although the event was published; emit answers as soon as "
        "Kafka has the event and decouples the caller from the worker. Use request-reply "
        "only where the caller must know the outcome now."
    )
    notes.append(
        "A one-node broker acknowledges acks=all on the leader alone; with replicas, both "
        "the request's and the reply's produce also wait for the followers, so request-reply "
        "pays the replication delay twice where emit pays it once."
    )
    return notes


def render(
    runs: Sequence[Run],
    split: Breakdown | None,
    plan: Plan,
    env: dict[str, str],
    duration_s: float,
    load: list[float],
) -> str:
    versions = environment.versions()
    dead = sum(run.dead_letters for run in runs)
    unexpected = sum(run.unexpected for run in runs)
    concurrencies = ", C=".join(str(c) for c in plan.concurrencies)
    busy = (
        f" **The machine was busy**: load average {load[0]:.2f} before the run on "
        f"{env.get('CPUs', '?')} CPUs, so other work shared the CPUs with what is measured."
        if load[0] >= 1.0
        else ""
    )
    parts = [
        "# Emit vs request-reply: round-trip latency",
        "",
        "Written by `python -m bench.request_reply`; see the module's docstring for how it "
        "measures. One run on one machine that also runs the broker (a JVM), the API, the "
        "worker and the load generator: read the numbers as an order of magnitude and the "
        "ratios, not as capacity." + busy,
        "",
        "| style | request | answer |",
        "| --- | --- | --- |",
        *[f"| {s.name} | `POST /verification-emails{s.query}` | {s.what} |" for s in STYLES],
        "",
        "C = concurrent connections, each sending its next request when the previous one was "
        "answered. Latency is per request at the client (httpx), from before the request is "
        "written to the end of the response. non-2xx counts answers outside 2xx, timeouts and "
        "transport errors. CPU ms/req: CPU time of the process over the measured run divided "
        "by its requests.",
        "",
        table(runs),
        "",
        f"Every answer was the style's own status (202 for emit, 200 for request-reply): "
        f"{'yes' if unexpected == 0 else f'no, {unexpected} other 2xx'}. Dead letters written "
        f"by the worker during the measured runs: {dead}. The worker consumes emit's events "
        "too (it sends those emails without replying); before every run the bench waits "
        "until it has caught up, so no backlog of one run is in the next.",
        "",
        *breakdown_section(split),
        "## Interpretation",
        "",
        *[f"- {note}" for note in interpretation(runs, split)],
        "",
        "## Environment",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in env.items()],
        f"| load average before, after | {load[0]:.2f}, {load[1]:.2f} (1 min) |",
        f"| bench duration | {duration_s:.0f} s |",
        "",
        "| library | version |",
        "| --- | --- |",
        *[f"| {name} | {versions.get(name, 'not installed')} |" for name in LIBRARIES],
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| requests per measured run | {plan.requests} (C={concurrencies}) |",
        "| warm-up per run | min(requests/2, 20 + 2·C), not measured, same style and C |",
        "| load generator | bench.loadgen --client httpx, one AsyncClient per connection |",
        "| API | `python -m app` (uvicorn, 1 process), API__LOG_LEVEL=warning, SQLite store |",
        "| worker | `python -m app.worker`, 1 process, SMTP__BACKEND=log, "
        "WORKER__LOG_LEVEL=warning |",
        f"| topics | {VERIFICATION_TOPIC} (1 partition), {REPLY_TOPIC} (created by the API: "
        "3 partitions) |",
        "| producers | acks=all, idempotent (the API's `replicated` policy and the worker's "
        "reply producer) |",
        "",
    ]
    return "\n".join(parts)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.request_reply", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=500, help="per measured run")
    parser.add_argument("--quick", action="store_true", help="50 requests per run: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="Markdown file to write")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(requests=50 if args.quick else args.requests, concurrencies=(1, CONCURRENCY))
    signal.signal(signal.SIGTERM, terminate)
    load_before = environment.load_average()[0]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kafka-events-request-reply-") as tmp:
        workdir = Path(tmp)
        cluster = KafkaCluster(workdir / "kafka", nodes=1)
        log("starting a one-node Kafka broker")
        cluster.start()
        try:
            servers = cluster.bootstrap_servers
            asyncio.run(create_topics(servers, [VERIFICATION_TOPIC]))
            port = free_port()
            env = service_env(servers, workdir / "store.db", port)
            logs = {"api": workdir / "api.log", "worker": workdir / "worker.log"}
            with (
                started("worker", "app.worker", env, logs["worker"]) as worker_pid,
                started("api", "app", env, logs["api"]) as api_pid,
            ):
                pids = {"api": api_pid, "worker": worker_pid}
                base = f"http://{HOST}:{port}"
                wait_ready(base, pids, logs)
                broker_pid = cluster.pid(1)
                if broker_pid is not None:
                    pids["broker"] = broker_pid
                runs = measure(plan, base, servers, pids, logs["worker"], t0)
                split: Breakdown | None = None
                try:
                    wait_drained(servers)
                    split = breakdown(base, min(plan.requests, 200))
                    log(f"  breakdown: {split}")
                except BreakdownFailed as exc:
                    log(f"  breakdown failed: {exc!r}")
        finally:
            log("stopping the broker")
            cluster.stop()
        env_description = environment.describe(REPO_ROOT, cluster.version)
    duration_s = time.monotonic() - t0
    text = render(
        runs,
        split,
        plan,
        env_description,
        duration_s,
        [load_before, environment.load_average()[0]],
    )
    print(text)
    args.output.write_text(text)
    log(f"wrote {args.output} in {duration_s:.0f}s")
    return 1 if any(run.error for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
