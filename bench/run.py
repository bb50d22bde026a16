"""`python -m bench`: start a broker, run every scenario, print and write the results.

Steps (each bounded in time; everything runs on 127.0.0.1):
1. Start a one-node Kafka broker with `devtools.kafka.KafkaCluster` on free ports in a
   temporary directory; create one topic per peer and per micro client (1 partition).
2. HTTP: for each repeat, for each peer (order rotated between repeats so slow drift of the
   machine does not always hit the same peer): start it with uvicorn (one worker) on a free
   port, wait for `GET /health/ready`, read its idle RSS, then for each concurrency run the
   load generator (`bench.loadgen`, its own process), and stop the server.
3. In-process: for each repeat, for each client: `bench.micro` in a fresh process.
4. Stop the broker, print the Markdown report and write it to `bench/RESULTS.md`.

A failing peer or client is reported as failed (exit code 1); the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from bench import environment, procfs
from bench.micro import CLIENTS
from bench.peers import PEERS, Peer
from bench.report import HttpRun, MicroRun, Report, render
from devtools.kafka import REPO_ROOT, KafkaCluster

HOST = "127.0.0.1"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
READY_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 15.0
RUN_DEADLINE_S = 60.0  # a load or micro run stops starting requests after this
TOPIC_PREFIX = "bench"
# Sequential publishes per micro run, where the default would take long: with linger.ms=5
# each sequential publish waits ~5 ms, and a few hundred show that as well as thousands.
MICRO_SEQUENTIAL_CAP = {"confluent_linger5": 300}


@dataclass(frozen=True, slots=True)
class Plan:
    repeats: int
    concurrencies: tuple[int, ...]
    requests: int  # per HTTP run at concurrency 1
    requests_concurrent: int  # per HTTP run at higher concurrency
    micro_sequential: int
    micro_concurrent: int
    micro_concurrency: int
    peers: tuple[Peer, ...]
    clients: tuple[str, ...]

    def http_requests(self, peer: Peer, concurrency: int) -> int:
        default = self.requests if concurrency == 1 else self.requests_concurrent
        return min(default, peer.requests_for(concurrency, default))

    def micro_sequential_for(self, client: str) -> int:
        return min(self.micro_sequential, MICRO_SEQUENTIAL_CAP.get(client, self.micro_sequential))

    def warmup(self, peer: Peer, concurrency: int) -> int:
        return min(self.http_requests(peer, concurrency) // 2, 20 + 2 * concurrency)

    def settings(self) -> dict[str, str]:
        per_peer = [
            f"{p.name}: {', '.join(str(self.http_requests(p, c)) for c in self.concurrencies)}"
            for p in self.peers
            if any(self.http_requests(p, c) != self._default(c) for c in self.concurrencies)
        ]
        return {
            "repeats": str(self.repeats),
            "HTTP concurrencies": ", ".join(str(c) for c in self.concurrencies),
            "HTTP requests per run": ", ".join(
                f"C={c}: {self._default(c)}" for c in self.concurrencies
            )
            + (f" (fewer for {'; '.join(per_peer)})" if per_peer else ""),
            "HTTP warm-up per run": "min(requests/2, 20 + 2·C), not measured",
            "micro messages per run": (
                f"sequential {self.micro_sequential}, concurrent {self.micro_concurrent} "
                f"at C={self.micro_concurrency} (after 50 warm-up publishes each)"
            )
            + "".join(
                f"; sequential {self.micro_sequential_for(c)} for {c}"
                for c in self.clients
                if self.micro_sequential_for(c) != self.micro_sequential
            ),
            "load generator": "bench.loadgen, raw HTTP/1.1 keep-alive client on uvloop",
            "server": "uvicorn, 1 worker, --no-access-log, log level warning",
            "producers": "acks=all, idempotent, linger 0 (confluent_linger5: 5 ms)",
        }

    def _default(self, concurrency: int) -> int:
        return self.requests if concurrency == 1 else self.requests_concurrent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def topic_for(kind: str, name: str) -> str:
    return f"{TOPIC_PREFIX}.{kind}.{name}"


async def _create_topics(bootstrap_servers: str, names: Sequence[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","))
    await admin.start()
    try:
        async with asyncio.timeout(30):
            await admin.create_topics(
                [NewTopic(name, num_partitions=1, replication_factor=1) for name in names]
            )
    finally:
        await admin.close()


# -- HTTP peers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    pid: int
    url: str


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def serve(peer: Peer, bootstrap_servers: str, scratch: Path) -> Iterator[Server]:
    """Run one peer under uvicorn until the block ends; fail if it is not ready in time."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        peer.factory,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "10",
    ]
    env = {**os.environ, **peer.env(bootstrap_servers, topic_for("http", peer.name), scratch)}
    log_path = scratch / f"{peer.name}.log"
    with log_path.open("ab") as out:
        # argv of this interpreter and fixed arguments; no shell.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{peer.name} exited with {process.returncode}:\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health/ready", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name} not ready within {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
        log(f"  {peer.name} ready in {READY_TIMEOUT_S - (deadline - time.monotonic()):.1f}s")
        yield Server(process.pid, f"{base}/verification-emails")
    finally:
        stopping = time.monotonic()
        _stop_process(process)
        log(f"  {peer.name} stopped in {time.monotonic() - stopping:.1f}s")


def _run_json(command: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a bench module in its own process and parse the JSON it prints."""
    # argv of this interpreter and fixed arguments; no shell.
    done = subprocess.run(  # noqa: S603
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"exit code {done.returncode}: {tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_http(
    plan: Plan, bootstrap_servers: str, broker_pid: int | None, scratch: Path, started: float
) -> list[HttpRun]:
    runs: list[HttpRun] = []
    for repeat in range(plan.repeats):
        shift = repeat % len(plan.peers)
        for peer in plan.peers[shift:] + plan.peers[:shift]:
            try:
                with serve(peer, bootstrap_servers, scratch) as server:
                    idle = procfs.memory_kib(server.pid)["VmRSS"]
                    for concurrency in plan.concurrencies:
                        runs.append(
                            _http_run(
                                plan, peer, concurrency, repeat, server, broker_pid, idle, started
                            )
                        )
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log(f"  {peer.name}: {exc}")
                runs += [
                    HttpRun(peer.name, c, repeat, error=str(exc).splitlines()[0])
                    for c in plan.concurrencies
                    if not any(
                        r.peer == peer.name and r.repeat == repeat and r.concurrency == c
                        for r in runs
                    )
                ]
    return runs


def _http_run(
    plan: Plan,
    peer: Peer,
    concurrency: int,
    repeat: int,
    server: Server,
    broker_pid: int | None,
    idle: int,
    t0: float,
) -> HttpRun:
    requests = plan.http_requests(peer, concurrency)
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        server.url,
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(plan.warmup(peer, concurrency)),
        "--server-pid",
        str(server.pid),
        "--deadline-s",
        str(RUN_DEADLINE_S),
        "--tag",
        f"{peer.name}-{concurrency}-{repeat}",
    ]
    if broker_pid is not None:
        command += ["--broker-pid", str(broker_pid)]
    load = os.getloadavg()[0]
    try:
        result = _run_json(command, timeout_s=2 * RUN_DEADLINE_S + 30)
    except (RuntimeError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        log(f"  {peer.name} C={concurrency}: {exc}")
        return HttpRun(peer.name, concurrency, repeat, error=str(exc), idle_rss_kib=idle)
    result["load_before"] = load
    latency = result["latency"]
    log(
        f"[{time.monotonic() - t0:5.0f}s] http {peer.name:<21} C={concurrency:<3} run "
        f"{repeat + 1}/{plan.repeats}: {result['throughput_rps']:7.0f} req/s, "
        f"p50 {latency['p50_ms']:7.2f} ms, p99 {latency['p99_ms']:7.2f} ms, "
        f"non-202 {result['non_202'] + result['not_sent']}, load {load:.2f}"
    )
    return HttpRun(peer.name, concurrency, repeat, result=result, idle_rss_kib=idle)


# -- in-process --------------------------------------------------------------------------------


def run_micro(plan: Plan, bootstrap_servers: str, started: float) -> list[MicroRun]:
    runs: list[MicroRun] = []
    for repeat in range(plan.repeats):
        shift = repeat % len(plan.clients)
        for client in plan.clients[shift:] + plan.clients[:shift]:
            command = [
                sys.executable,
                "-m",
                "bench.micro",
                client,
                "--bootstrap-servers",
                bootstrap_servers,
                "--topic",
                topic_for("micro", client),
                "--sequential",
                str(plan.micro_sequential_for(client)),
                "--concurrent",
                str(plan.micro_concurrent),
                "--concurrency",
                str(plan.micro_concurrency),
                "--deadline-s",
                str(RUN_DEADLINE_S),
            ]
            try:
                result = _run_json(command, timeout_s=2 * RUN_DEADLINE_S + 60)
            except (RuntimeError, ValueError, IndexError, subprocess.SubprocessError) as exc:
                log(f"  micro {client}: {exc}")
                runs.append(MicroRun(client, repeat, error=str(exc)))
                continue
            seq, conc = result["sequential"], result["concurrent"]
            log(
                f"[{time.monotonic() - started:5.0f}s] micro {client:<18} run "
                f"{repeat + 1}/{plan.repeats}: sequential {seq['throughput_mps']:6.0f} msg/s "
                f"(p50 {seq['latency']['p50_ms']:.2f} ms), concurrent "
                f"{conc['throughput_mps']:6.0f} msg/s (p50 {conc['latency']['p50_ms']:.2f} ms)"
            )
            runs.append(MicroRun(client, repeat, result=result))
    return runs


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="per HTTP run at C=1")
    parser.add_argument("--requests-concurrent", type=int, default=6000, help="per HTTP run at C>1")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--micro-sequential", type=int, default=2000)
    parser.add_argument("--micro-concurrent", type=int, default=20000)
    parser.add_argument("--micro-concurrency", type=int, default=32)
    parser.add_argument("--peers", nargs="+", choices=[p.name for p in PEERS])
    parser.add_argument("--clients", nargs="+", choices=CLIENTS)
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, few requests: checks that all works"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="Markdown file to write")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    peers = tuple(p for p in PEERS if not args.peers or p.name in args.peers)
    clients = tuple(c for c in CLIENTS if not args.clients or c in args.clients)
    if args.quick:
        return Plan(
            repeats=1,
            concurrencies=tuple(args.concurrency),
            requests=100,
            requests_concurrent=200,
            micro_sequential=100,
            micro_concurrent=500,
            micro_concurrency=args.micro_concurrency,
            peers=peers,
            clients=clients,
        )
    return Plan(
        repeats=args.repeats,
        concurrencies=tuple(args.concurrency),
        requests=args.requests,
        requests_concurrent=args.requests_concurrent,
        micro_sequential=args.micro_sequential,
        micro_concurrent=args.micro_concurrent,
        micro_concurrency=args.micro_concurrency,
        peers=peers,
        clients=clients,
    )


def _terminate(signum: int, _: FrameType | None) -> None:
    # Unwind through every `finally`: servers and the broker are stopped on the way out.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    signal.signal(signal.SIGTERM, _terminate)
    load_before = os.getloadavg()
    if load_before[0] >= 1.0:
        log(f"note: load average {load_before[0]:.2f} before the run; expect noisy numbers")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kafka-events-bench-") as tmp:
        workdir = Path(tmp)
        cluster = KafkaCluster(workdir / "kafka", nodes=1)
        log("starting a one-node Kafka broker")
        cluster.start()
        try:
            servers = cluster.bootstrap_servers
            topics = [topic_for("http", p.name) for p in plan.peers]
            topics += [topic_for("micro", c) for c in plan.clients]
            asyncio.run(_create_topics(servers, topics))
            scratch = workdir / "scratch"  # server logs, the app's message store
            scratch.mkdir()
            http_runs = run_http(plan, servers, cluster.pid(1), scratch, started)
            micro_runs = run_micro(plan, servers, started)
        finally:
            log("stopping the broker")
            cluster.stop()
        env = environment.describe(REPO_ROOT, cluster.version)
    report = Report(
        environment=env,
        libraries=environment.versions(),
        settings=plan.settings(),
        load_before=load_before,
        load_after=os.getloadavg(),
        duration_s=time.monotonic() - started,
        peers=[(p.name, p.summary) for p in plan.peers],
        http=http_runs,
        micro=micro_runs,
    )
    text = render(report)
    print(text)
    args.output.write_text(text)
    log(f"wrote {args.output} in {report.duration_s:.0f}s")
    failed = [r for r in http_runs if r.error] + [r for r in micro_runs if r.error]
    return 1 if failed else 0
