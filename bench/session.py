"""One contender's turn: start it, wait until it is ready, check its contract, take every
measurement of the phase from it, count its records, stop it.

Each measurement is a `bench.loadgen` run in a process of its own. Around it the harness
reads the CPU time of every process of the contender and of the broker(s), and the peak RSS
(`VmHWM`, reset before) of the contender's processes: CPU per request divides by every
request answered, warm-up included, since the warm-up's CPU is in the same window.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import contract, procfs, topics
from bench.contenders import Contender
from bench.harness import HOST, free_port, log, log_tail
from bench.plan import Phase, Sizes
from bench.processes import Tree, started
from bench.records import Measurement, Session
from devtools.kafka import REPO_ROOT

__all__ = ["Broker", "answered", "answered_2xx", "run_session", "wait_ready"]

READY_TIMEOUT_S = 60.0
RUN_DEADLINE_S = 90.0  # a load run stops starting requests after this
OPEN_CONNECTIONS = 512


@dataclass(frozen=True, slots=True)
class Broker:
    bootstrap: str
    pids: tuple[int, ...]
    replicas: int

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += procfs.cpu_seconds(pid)
        return total


def topic_for(phase: Phase, contender: Contender) -> str:
    return f"bench.{phase.name}.{contender.name}"


def wait_ready(tree: Tree, base: str, logs: Path, contender: Contender) -> float:
    started_at = time.monotonic()
    while True:
        exited = tree.exited()
        if exited is not None:
            raise RuntimeError(
                f"{contender.name} exited with {exited.returncode}:\n"
                f"{log_tail(logs / f'{contender.name}.log')}"
            )
        answer = ""
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"{base}/health/ready", timeout=2.0)
            if ready.status_code == 200:
                return time.monotonic() - started_at
            answer = f" (last answer {ready.status_code}: {ready.text[:300]})"
        if time.monotonic() - started_at > READY_TIMEOUT_S:
            raise RuntimeError(
                f"{contender.name} not ready within {READY_TIMEOUT_S:.0f}s{answer}:\n"
                f"{log_tail(logs / f'{contender.name}.log')}"
            )
        time.sleep(0.1)


def _loadgen(url: str, args: Sequence[str], tag: str, contender: Contender) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        *args,
        "--expect-status",
        str(contender.expected_status),
        "--deadline-s",
        str(RUN_DEADLINE_S),
        "--tag",
        tag,
    ]


def _measure(
    command: list[str], kind: str, tree: Tree, broker: Broker, **where: int
) -> Measurement:
    measurement = Measurement(
        kind,
        concurrency=where.get("concurrency"),
        rate=where.get("rate"),
        requests=where.get("requests"),
    )
    pids = tree.pids()
    for pid in pids:
        procfs.reset_peak_rss(pid)
    measurement.load_before = os.getloadavg()[0]
    cpu, broker_cpu = tree.cpu_seconds(), broker.cpu_seconds()
    try:
        # argv of this interpreter and the harness's own arguments; no shell.
        done = subprocess.run(  # noqa: S603
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=2 * RUN_DEADLINE_S + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        measurement.error = "the load generator did not finish in time"
        return measurement
    measurement.server_cpu_s = tree.cpu_seconds() - cpu
    measurement.broker_cpu_s = broker.cpu_seconds() - broker_cpu
    for pid in tree.pids():
        with contextlib.suppress(OSError, KeyError):
            memory = procfs.memory_kib(pid)
            measurement.peak_rss_kib += memory["VmHWM"]
            measurement.rss_after_kib += memory["VmRSS"]
    if done.returncode != 0:
        measurement.error = "\n".join(done.stderr.strip().splitlines()[-5:])
        return measurement
    try:
        measurement.result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        measurement.error = "the load generator printed no result"
        return measurement
    measurement.served = answered(measurement.result)
    return measurement


def _statuses(result: Mapping[str, object]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in ("outcomes", "warmup_outcomes"):
        found = result.get(key)
        if isinstance(found, dict):
            for outcome, n in found.items():
                if str(outcome).isdigit():
                    counts[str(outcome)] = counts.get(str(outcome), 0) + int(n)
    return counts


def answered(result: Mapping[str, object]) -> int:
    """Requests answered with any status, warm-up included."""
    return sum(_statuses(result).values())


def answered_2xx(result: Mapping[str, object]) -> int:
    """Requests answered 2xx, warm-up included: each wrote a record."""
    return sum(n for status, n in _statuses(result).items() if status.startswith("2"))


def _plan(
    phase: Phase, contender: Contender, sizes: Sizes
) -> list[tuple[str, list[str], dict[str, int]]]:
    """(kind, load-generator arguments, where) of every measurement of this turn, in order."""
    steps: list[tuple[str, list[str], dict[str, int]]] = []
    serial = sizes.serial if phase.seed_method else (sizes.closed_requests_c1,)
    for count in serial:
        if 1 in phase.concurrencies or phase.seed_method:
            args = [
                "--requests",
                str(max(count // contender.slowness, 32)),
                "--concurrency",
                "1",
                "--warmup",
                str(sizes.warmup(1)),
            ]
            steps.append(("serial", args, {"concurrency": 1, "requests": count}))
    for concurrency in phase.concurrencies:
        if concurrency == 1:
            continue
        args = [
            "--requests",
            "200000",
            "--concurrency",
            str(concurrency),
            "--warmup",
            str(sizes.warmup(concurrency)),
            "--duration-s",
            str(sizes.closed_duration_s / contender.closed_duration_divisor),
        ]
        steps.append(("closed", args, {"concurrency": concurrency}))
    if contender.name in phase.open_loop:
        for rate in sizes.open_rates:
            args = [
                "--rate",
                str(rate),
                "--requests",
                str(sizes.open_requests_per_round()),
                "--warmup-s",
                str(sizes.open_warmup_s),
                "--connections",
                str(OPEN_CONNECTIONS),
            ]
            steps.append(("open", args, {"rate": rate}))
    return steps


def run_session(
    phase: Phase,
    contender: Contender,
    round_: int,
    broker: Broker,
    sizes: Sizes,
    scratch: Path,
    started_at: float,
) -> Session:
    session = Session(phase.name, contender.name, round_)
    topic = topic_for(phase, contender)
    port = free_port()
    launches = contender.launches(
        bootstrap_servers=broker.bootstrap,
        topic=topic,
        acks=phase.acks,
        workers=phase.workers,
        port=port,
        scratch=scratch,
    )
    base = f"http://{HOST}:{port}"
    url = f"{base}{contender.path}"
    before = topics.end_offset(broker.bootstrap, topic) if contender.uses_kafka else 0
    try:
        with started(launches, REPO_ROOT, scratch) as tree:
            session.ready_s = wait_ready(tree, base, scratch, contender)
            time.sleep(0.5)  # background start-up work (metadata, first polls) settles
            session.idle_rss_kib = tree.rss_kib()
            checked = contract.check(
                url,
                expected=contender.expected_status,
                topic=topic if contender.uses_kafka else None,
                bootstrap=broker.bootstrap,
                emit=contender.style == "emit",
            )
            session.contract, session.bad_statuses = checked.deviations, checked.bad_statuses
            session.answered_2xx += checked.accepted
            for kind, args, where in _plan(phase, contender, sizes):
                tag = f"{phase.name}-{contender.name}-{round_}-{kind}-{len(session.measurements)}"
                measurement = _measure(
                    _loadgen(url, args, tag, contender), kind, tree, broker, **where
                )
                session.measurements.append(measurement)
                if measurement.result is not None:
                    session.answered_2xx += answered_2xx(measurement.result)
                _log_measurement(phase, contender, round_, measurement, started_at)
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        session.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log(f"  {contender.name}: {exc}")
    if contender.uses_kafka:
        with contextlib.suppress(Exception):
            session.records = topics.end_offset(broker.bootstrap, topic) - before
    return session


def _log_measurement(
    phase: Phase, contender: Contender, round_: int, m: Measurement, started_at: float
) -> None:
    where = f"C={m.concurrency}" if m.rate is None else f"{m.rate}/s"
    elapsed = time.monotonic() - started_at
    head = (
        f"[{elapsed:5.0f}s] {phase.name} r{round_ + 1} {contender.name:<20} {m.kind:<6} {where:<7}"
    )
    if m.result is None:
        log(f"{head} failed: {m.error}")
        return
    latency = m.result["latency"]
    log(
        f"{head} {m.result['throughput_rps']:7.0f} req/s p50 {latency['p50_ms']:7.2f} "
        f"p99 {latency['p99_ms']:7.2f} ms, cpu {m.per_request_ms(m.server_cpu_s):.2f} ms/req, "
        f"unexpected {m.result.get('non_202', 0)}, load {m.load_before:.2f}"
    )
