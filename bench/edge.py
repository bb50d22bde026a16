"""`python -m bench.edge` (`make bench-edge`): the HTTP server candidates under attack and load.

For each candidate server, serving the real app (`app.main:create_app`) against a real
one-node broker (`devtools.kafka`, free loopback ports, a temporary directory):

1. start it on a free loopback port with a soft descriptor limit of 1,024 (the usual default;
   `python -m app` raises its own), wait for `GET /health/ready`;
2. the hostile clients of `bench.edge_attacks`: an idle connection, slowloris and a stalled
   body side by side (each watched for up to 30 s, a normal request 3 s in), then a flood of
   1,100 stalled connections, 1 / 8 / 64 MiB headers, four 64 MiB headers at once and 20,000
   headers, each with a normal request meanwhile and the server's peak RSS;
3. throughput: `bench.loadgen` (the same client as `make bench`) on
   `POST /verification-emails` at C=1 and C=32;
4. stop it. Then write a dated Markdown table to `bench/results/edge-<date>.md`.

Everything is bounded in count and time and sent to 127.0.0.1 only. On a shared machine the
throughput figures are indicative: compare candidates within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import edge_attacks, environment, procfs
from bench.edge_attacks import Outcome, Target
from bench.harness import HOST, STOP_TIMEOUT_S, create_topics, free_port, log, log_tail, run_json
from devtools.kafka import REPO_ROOT, KafkaCluster
from devtools.processes import stop_process

RESULTS_DIR = Path(__file__).resolve().parent / "results"
READY_TIMEOUT_S = 60.0
SERVER_NOFILE = 1024
APP = "app.main:create_app"
# The app's own limits (app.http_limits) at their loosest for the other servers, so that their
# rows show what the server itself does: heads up to 1 MiB and 10,000 fields, bodies 300 s.
LOOSE_APP_LIMITS = {
    "SERVER__MAX_HEADER_BYTES": "1048576",
    "SERVER__MAX_HEADER_COUNT": "10000",
    "SERVER__BODY_TIMEOUT_S": "300",
}


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    options: str  # as the table shows them
    argv: tuple[str, ...]  # {port} is replaced
    env: tuple[tuple[str, str], ...] = tuple(LOOSE_APP_LIMITS.items())

    def command(self, port: int) -> list[str]:
        return [sys.executable, *(a.replace("{port}", str(port)) for a in self.argv)]


_UVICORN = ("-m", "uvicorn", "--factory", APP, "--host", HOST, "--port", "{port}")
_QUIET = ("--log-level", "warning", "--no-access-log")
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("uvicorn-httptools", "defaults (the service until now)", (*_UVICORN, *_QUIET)),
    Candidate(
        "uvicorn-h11",
        "--http h11 --h11-max-incomplete-event-size 16384 --limit-concurrency 1000 "
        "--timeout-keep-alive 5",
        (
            *_UVICORN,
            *_QUIET,
            "--http",
            "h11",
            "--h11-max-incomplete-event-size",
            "16384",
            "--limit-concurrency",
            "1000",
            "--timeout-keep-alive",
            "5",
        ),
    ),
    Candidate(
        "granian",
        "--interface asgi --http 1 --http1-header-read-timeout 10000 --http1-buffer-size "
        "16384 --backpressure 1000",
        (
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            HOST,
            "--port",
            "{port}",
            "--http",
            "1",
            "--http1-header-read-timeout",
            "10000",
            "--http1-buffer-size",
            "16384",
            "--backpressure",
            "1000",
            "--log-level",
            "warning",
            APP,
        ),
    ),
    Candidate(
        "hypercorn",
        "-k uvloop --read-timeout 10 --keep-alive 5 (h11_max_incomplete_size 16 KiB default)",
        (
            "-m",
            "hypercorn",
            "-k",
            "uvloop",
            "--bind",
            f"{HOST}:{{port}}",
            "--read-timeout",
            "10",
            "--keep-alive",
            "5",
            "--log-level",
            "warning",
            f"{APP}()",
        ),
    ),
    Candidate(
        "python -m app",
        "uvicorn + httptools + app.server (SERVER__* defaults: head 10 s, body 15 s, 16 KiB, "
        "100 fields, 1000 connections, RLIMIT_NOFILE raised)",
        ("-m", "app"),
        env=(),
    ),
)


def _limit_descriptors() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SERVER_NOFILE, hard), hard))


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def serving_pid(pid: int) -> int:
    """The process that serves requests: `pid`, or the largest of its descendants (a worker)."""
    pids = [pid]
    frontier = [pid]
    while frontier:
        frontier = [child for parent in frontier for child in _children(parent)]
        pids += frontier
    sizes = {}
    for candidate in pids:
        with contextlib.suppress(OSError, KeyError):
            sizes[candidate] = procfs.memory_kib(candidate)["VmRSS"]
    return max(sizes, key=sizes.__getitem__) if sizes else pid


@contextlib.contextmanager
def serve(candidate: Candidate, env: dict[str, str], scratch: Path) -> Iterator[tuple[int, int]]:
    """Run the candidate until the block ends: (port, pid of the serving process)."""
    port = free_port()
    log_path = scratch / f"{candidate.name.replace(' ', '_')}.log"
    with log_path.open("ab") as out:
        # argv of this interpreter and fixed arguments; no shell.
        process = subprocess.Popen(  # noqa: S603
            candidate.command(port),
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "API__PORT": str(port),
                "API__HOST": HOST,
                **env,
                **dict(candidate.env),
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_limit_descriptors,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode}:\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{port}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.2)
        time.sleep(1.0)  # a supervisor's worker is up; let the serving process settle
        yield port, serving_pid(process.pid)
    finally:
        stop_process(process, candidate.name, timeout_s=STOP_TIMEOUT_S)


@dataclass(slots=True)
class Result:
    candidate: Candidate
    idle_rss_mib: float | None = None
    attacks: dict[str, Outcome] | None = None
    throughput: dict[int, dict[str, float]] | None = None
    error: str | None = None


async def attack(target: Target) -> dict[str, Outcome]:
    names = list(edge_attacks.HOLDS)
    if target.rss_pid is not None:
        procfs.reset_peak_rss(target.rss_pid)
    holds = await asyncio.gather(*(edge_attacks.HOLDS[n](target) for n in names))
    outcomes = dict(zip(names, holds, strict=True))
    for name, scenario in edge_attacks.SCENARIOS.items():
        log(f"    {name}")
        outcomes[name] = await scenario(target)
        await asyncio.sleep(1.0)
    return outcomes


def load(port: int, pid: int, concurrency: int, requests: int, tag: str) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        f"http://{HOST}:{port}/verification-emails",
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(min(requests // 2, 20 + 2 * concurrency)),
        "--server-pid",
        str(pid),
        "--deadline-s",
        "60",
        "--tag",
        tag,
    ]
    result = run_json(command, timeout_s=150)
    return {
        "rps": result["throughput_rps"],
        "p50": result["latency"]["p50_ms"],
        "p99": result["latency"]["p99_ms"],
        "non_202": result["non_202"] + result["not_sent"],
    }


def run(args: argparse.Namespace) -> tuple[list[Result], dict[str, str]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="kafka-events-edge-") as tmp:
        workdir = Path(tmp)
        cluster = KafkaCluster(workdir / "kafka", nodes=1)
        log("starting a one-node Kafka broker")
        cluster.start()
        try:
            chosen = [c for c in CANDIDATES if not args.servers or c.name in args.servers]
            topics = [f"bench.edge.{i}" for i in range(len(chosen))]
            asyncio.run(create_topics(cluster.bootstrap_servers, topics))
            for index, candidate in enumerate(chosen):
                log(f"{candidate.name}")
                env = {
                    "KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
                    "VERIFICATION__TOPIC": topics[index],
                    "REPLY__TOPIC": f"{topics[index]}.reply",
                    "REPLY__REPLICATION_FACTOR": "1",
                    "STORE__URL": f"sqlite+aiosqlite:///{workdir / f'store-{index}.db'}",
                    "RATE_LIMIT__ENABLED": "false",  # the probes reuse one address
                    "API__LOG_LEVEL": "warning",
                }
                results.append(measure(candidate, env, workdir, args))
        finally:
            cluster.stop()
    return results, environment.describe(REPO_ROOT, cluster.version)


def measure(
    candidate: Candidate, env: dict[str, str], workdir: Path, args: argparse.Namespace
) -> Result:
    result = Result(candidate)
    try:
        with serve(candidate, env, workdir) as (port, pid):
            result.idle_rss_mib = procfs.memory_kib(pid)["VmRSS"] / 1024
            if not args.no_attacks:
                result.attacks = asyncio.run(attack(Target(HOST, port, pid)))
        with serve(candidate, env, workdir) as (port, pid):  # a fresh process for the load
            result.throughput = {}
            for concurrency, requests in ((1, args.requests), (32, args.requests_concurrent)):
                tag = f"edge-{candidate.name.replace(' ', '_')}-{concurrency}"
                result.throughput[concurrency] = load(port, pid, concurrency, requests, tag)
                figures = result.throughput[concurrency]
                log(f"  C={concurrency}: {figures['rps']:.0f} req/s, p99 {figures['p99']:.1f} ms")
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as error:
        log(f"  failed: {error}")
        result.error = str(error).splitlines()[0]
    return result


def _cell(outcome: Outcome) -> str:
    held = "open at 30 s" if outcome.held_s is None else f"closed at {outcome.held_s:.1f} s"
    parts = [held] if outcome.watched else []
    parts += [f"answer: {outcome.answer}", f"normal request: {outcome.probe}"]
    if outcome.after:
        parts.append(f"after: {outcome.after}")
    if outcome.peak_rss_mib is not None:
        parts.append(f"peak RSS {outcome.peak_rss_mib:.0f} MiB")
    parts += outcome.notes
    return "; ".join(parts)


def render(
    results: list[Result],
    started: datetime.datetime,
    load_before: float,
    machine: dict[str, str],
) -> str:
    today = started.date().isoformat()
    lines = [
        f"# The HTTP edge: servers under attack and load ({today})",
        "",
        "Written by `python -m bench.edge` (`make bench-edge`). Each server serves the real app "
        "(`app.main:create_app`, one process) against a real one-node broker, started with a "
        f"soft descriptor limit of {SERVER_NOFILE}. For every server but `python -m app` the "
        "app's own limits are at their loosest (heads up to 1 MiB and 10,000 fields, bodies "
        "300 s), so that its row shows what the server itself does. Throughput: `bench.loadgen` on "
        "`POST /verification-emails`; on a shared machine these figures are indicative.",
        "",
        *(f"- {name}: {value}" for name, value in machine.items()),
        f"- load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}",
        "- versions: " + ", ".join(f"{name} {_version(name)}" for name in _SHOWN),
        "",
        "| server | options |",
        "|---|---|",
        *(f"| {r.candidate.name} | `{r.candidate.options}` |" for r in results),
        "",
        "## Throughput",
        "",
        "| server | idle RSS | C=1 req/s | C=1 p50 / p99 ms | C=32 req/s | C=32 p50 / p99 ms "
        "| non-202 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.throughput is None:
            lines.append(f"| {r.candidate.name} | failed: {r.error} | | | | | |")
            continue
        one, many = r.throughput[1], r.throughput[32]
        lines.append(
            f"| {r.candidate.name} | {r.idle_rss_mib or 0:.0f} MiB | {one['rps']:.0f} | "
            f"{one['p50']:.1f} / {one['p99']:.1f} | {many['rps']:.0f} | "
            f"{many['p50']:.1f} / {many['p99']:.1f} | {one['non_202'] + many['non_202']:.0f} |"
        )
    names = [*edge_attacks.HOLDS, *edge_attacks.SCENARIOS]
    lines += ["", "## Attacks", ""]
    for name in names:
        lines += [f"### {name}", "", "| server | outcome |", "|---|---|"]
        for r in results:
            outcome = (r.attacks or {}).get(name)
            lines.append(f"| {r.candidate.name} | {_cell(outcome) if outcome else r.error} |")
        lines.append("")
    return "\n".join(lines)


_SHOWN = ("uvicorn", "httptools", "h11", "granian", "hypercorn", "fastapi", "starlette")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__)
    parser.add_argument("--servers", nargs="+", choices=[c.name for c in CANDIDATES])
    parser.add_argument("--requests", type=int, default=500, help="at C=1")
    parser.add_argument("--requests-concurrent", type=int, default=3000, help="at C=32")
    parser.add_argument("--no-attacks", action="store_true", help="throughput only")
    parser.add_argument("--output", type=Path, help="default: bench/results/edge-<date>.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # this process holds the flood's connections
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()[0]
    results, machine = run(args)
    text = render(results, started, load_before, machine)
    output = args.output or RESULTS_DIR / f"edge-{started.date().isoformat()}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(text)
    log(f"wrote {output}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
