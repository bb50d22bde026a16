"""`python -m bench`: install the Node peers, start the brokers, run every phase, the soak and
the in-process runs, then write the results.

Steps (each bounded in time; everything runs on 127.0.0.1):
1. `bench/peers/node/install.sh`: Node.js and npm from Debian when missing, then the Node
   peers from their lock file (`npm ci`) and their build.
2. A one-node broker (`devtools.kafka.KafkaCluster`) in a temporary directory, one topic per
   contender and phase. The phases on it (`bench.plan.PHASES`), each in rounds: every
   contender in turn (order rotated each round) is started, checked and measured
   (`bench.session`), then stopped.
3. On the same broker: the soak (`bench.soak`), then the in-process runs (`bench.micro`),
   interleaved by round.
4. A three-node cluster for the replicated phase.
5. `bench/results/bench-<date>-<HHMM>.json` (every figure), `.md` (the tables) and the plots; the
   README's benchmark section is replaced with the new summary.

A contender that fails is reported as failed (exit status 1); the others still run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import environment, plan, report
from bench.contenders import CONTENDERS, by_name
from bench.harness import log, run_json, terminate
from bench.records import MicroRun, Run
from bench.session import Broker, run_session
from bench.soak import TOPIC as SOAK_TOPIC
from bench.soak import run_soak
from devtools.kafka import REPO_ROOT, KafkaCluster

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MICRO_CLIENTS = ("facade", "aiokafka", "faststream", "confluent")
MICRO_DEADLINE_S = 60.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, few requests: a smoke run")
    parser.add_argument("--phases", nargs="+", choices=[p.name for p in plan.PHASES])
    parser.add_argument("--contenders", nargs="+", choices=[c.name for c in CONTENDERS])
    parser.add_argument("--no-soak", action="store_true")
    parser.add_argument("--no-micro", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace the README's benchmark section (default: only for a full run)",
    )
    return parser.parse_args(argv)


def _phases(args: argparse.Namespace) -> list[plan.Phase]:
    chosen = [p for p in plan.PHASES if not args.phases or p.name in args.phases]
    if args.contenders:
        chosen = [
            plan.Phase(
                **{
                    **{f: getattr(p, f) for f in p.__dataclass_fields__},
                    "contenders": tuple(c for c in p.contenders if c in args.contenders),
                    "open_loop": tuple(c for c in p.open_loop if c in args.contenders),
                }
            )
            for p in chosen
        ]
    return [p for p in chosen if p.contenders]


def _run_phase(
    phase: plan.Phase, broker: Broker, sizes: plan.Sizes, scratch: Path, run: Run, t0: float
) -> None:
    contenders = by_name(list(phase.contenders))
    log(f"phase {phase.name}: {phase.title}")
    for round_ in range(sizes.rounds):
        shift = round_ % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            run.sessions.append(run_session(phase, contender, round_, broker, sizes, scratch, t0))


def _run_micro(broker: Broker, sizes: plan.Sizes, run: Run, t0: float) -> None:
    for round_ in range(sizes.rounds):
        shift = round_ % len(MICRO_CLIENTS)
        for client in MICRO_CLIENTS[shift:] + MICRO_CLIENTS[:shift]:
            command = [
                sys.executable, "-m", "bench.micro", client,
                "--bootstrap-servers", broker.bootstrap,
                "--topic", f"bench.micro.{client}",
                "--sequential", str(sizes.micro_sequential),
                "--concurrent", str(sizes.micro_concurrent),
                "--concurrency", "32",
                "--deadline-s", str(MICRO_DEADLINE_S),
            ]  # fmt: skip
            entry = MicroRun(client, round_)
            try:
                entry.result = run_json(command, timeout_s=2 * MICRO_DEADLINE_S + 60)
            except RuntimeError as error:
                entry.error = str(error)
            else:
                seq, conc = entry.result["sequential"], entry.result["concurrent"]
                log(
                    f"[{time.monotonic() - t0:5.0f}s] micro r{round_ + 1} {client:<10} "
                    f"sequential {seq['throughput_mps']:6.0f} msg/s, concurrent "
                    f"{conc['throughput_mps']:6.0f} msg/s"
                )
            run.micro.append(entry)


def _topics(phases: Sequence[plan.Phase], extra: Sequence[str]) -> list[str]:
    """Every contender's topic and, for those with a reply reader (ours creates one when it
    is missing, Nest's `send` too), its reply topic."""
    names = [f"bench.{p.name}.{c}" for p in phases for c in p.contenders] + list(extra)
    with_replies = {
        c.name for c in CONTENDERS if c.kind in ("app", "app_reply") or c.style == "request-reply"
    }
    names += [
        f"bench.{p.name}.{c}.reply" for p in phases for c in p.contenders if c in with_replies
    ]
    return names


def _with_cluster(
    nodes: int, workdir: Path, phases: Sequence[plan.Phase], extra_topics: Sequence[str]
) -> tuple[KafkaCluster, Broker]:
    cluster = KafkaCluster(workdir / f"kafka-{nodes}", nodes=nodes)
    log(f"starting a {nodes}-node Kafka cluster")
    cluster.start()
    pids = tuple(pid for n in cluster.node_ids if (pid := cluster.pid(n)) is not None)
    broker = Broker(cluster.bootstrap_servers, pids, replicas=nodes)
    from bench import topics

    topics.create(broker.bootstrap, _topics(phases, extra_topics), nodes)
    return cluster, broker


def _install_node(run: Run, phases: Sequence[plan.Phase]) -> None:
    wanted = {c for p in phases for c in p.contenders}
    if not any(c.kind == "node" for c in by_name(list(wanted))):
        return
    from bench.peers import node_peers

    log("installing the Node peers")
    log(f"  {node_peers.install()}")
    run.versions.update(node_peers.versions())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = plan.sizes(quick=args.quick)
    phases = _phases(args)
    signal.signal(signal.SIGTERM, terminate)
    t0 = time.monotonic()
    run = Run(
        environment={},
        versions=environment.versions(),
        settings=report.settings(sizes, phases),
        command="make bench"
        if argv is None and len(sys.argv) == 1
        else "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        load=[os.getloadavg()[0]],
    )
    if run.load[0] >= 1.0:
        log(f"note: load average {run.load[0]:.2f} before the run; expect noisy numbers")
    _install_node(run, phases)
    one_node = [p for p in phases if p.brokers == 1]
    three_nodes = [p for p in phases if p.brokers == 3]
    micro_topics = [f"bench.micro.{c}" for c in MICRO_CLIENTS]
    kafka_version = ""
    clusters: dict[int, list[str]] = {}  # node count -> what ran on that cluster
    with tempfile.TemporaryDirectory(prefix="kafka-events-bench-") as tmp:
        workdir = Path(tmp)
        scratch = workdir / "scratch"  # server logs, the app's message store
        scratch.mkdir()
        do_soak = not args.no_soak and (not args.contenders or "app" in args.contenders)
        if one_node or do_soak or not args.no_micro:
            cluster, broker = _with_cluster(
                1, workdir, one_node, [SOAK_TOPIC, f"{SOAK_TOPIC}.reply", *micro_topics]
            )
            kafka_version = cluster.version
            clusters[1] = [
                *(p.name for p in one_node),
                *(["the soak"] if do_soak else []),
                *([] if args.no_micro else ["the in-process runs"]),
            ]
            try:
                for phase in one_node:
                    _run_phase(phase, broker, sizes, scratch, run, t0)
                if do_soak:
                    log(f"soak: app at {sizes.soak_rate} req/s for {sizes.soak_s:.0f}s")
                    run.soak = run_soak(
                        by_name(["app"])[0], broker, sizes.soak_rate, sizes.soak_s, scratch
                    )
                if not args.no_micro:
                    _run_micro(broker, sizes, run, t0)
            finally:
                log("stopping the broker")
                cluster.stop()
        if three_nodes:
            cluster, broker = _with_cluster(3, workdir, three_nodes, [])
            kafka_version = cluster.version
            clusters[3] = [p.name for p in three_nodes]
            try:
                for phase in three_nodes:
                    _run_phase(phase, broker, sizes, scratch, run, t0)
            finally:
                log("stopping the cluster")
                cluster.stop()
    run.environment = environment.describe(REPO_ROOT, kafka_version, clusters)
    run.duration_s = time.monotonic() - t0
    run.load.append(os.getloadavg()[0])
    written = report.write(
        run,
        args.output_dir,
        readme=args.readme
        if args.readme is not None
        else not (args.quick or args.phases or args.contenders),
    )
    for path in written:
        log(f"wrote {path}")
    failed = [s for s in run.sessions if s.error or any(m.error for m in s.measurements)]
    return 1 if failed or any(m.error for m in run.micro) else 0
