"""Command line for the local Kafka dev cluster: ``python -m devtools.kafka <command>``.

Commands::

    fetch    [--version V]                  download the broker jars (Maven Central)
    start    [--nodes 1|3] [--dir D] [--port P] [--version V] [--heap-mb M] [--reset]
             [--scram-user NAME:PASSWORD ...] [--sasl-plaintext]
                                            start in the background and return
    run      (same options as start)        start, block until Ctrl-C / SIGTERM, then stop
    stop     [--dir D]                      stop every node
    stop-node N [--dir D]                   stop one node gracefully (SIGTERM)
    kill     N [--dir D]                    crash one node (SIGKILL)
    restart  N [--dir D]                    (stop and) start one node again, wait until registered
    status   [--dir D]                      each node: running/stopped, pid, address

Run it from the repository root (the project is not installed as a package).
``--dir`` defaults to ``<repo>/.kafka/dev``; a relative ``--dir`` is relative to the current
directory. ``--port`` is node 1's client port (default 9092); node i uses ``port + 2*(i-1)``
for clients and the next port for its controller; ``--port 0`` picks free ports.
``--scram-user`` (repeatable) adds a SASL_SSL listener per node (SCRAM-SHA-256/512, a throwaway
CA; ``--sasl-plaintext`` adds a SASL_PLAINTEXT one too) on the ports after the plaintext ones;
the users are created on the first start of a directory only (see ``cluster.py``).
Exit status: 0 on success, 1 on an error (one line on stderr; ``-v`` adds details such as the
tail of a broker log), 130 if interrupted.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from devtools.kafka.cluster import (
    DEFAULT_KAFKA_VERSION,
    KAFKA_VERSION_ENV,
    MAX_HEAP_MB,
    REPO_ROOT,
    SUPPORTED_NODE_COUNTS,
    KafkaCluster,
    KafkaToolError,
    SecureListeners,
    ensure_libs,
    resolve_version,
)

DEFAULT_DIR = REPO_ROOT / ".kafka" / "dev"
DEFAULT_PORT = 9092

log = logging.getLogger("devtools.kafka")


def _out(text: str) -> None:
    print(text, flush=True)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _load(args: argparse.Namespace) -> KafkaCluster:
    return KafkaCluster.load(args.dir)


def _reset_dir(workdir: Path) -> None:
    """Delete a stopped cluster's directory; refuse anything that does not look like one."""
    if (workdir / "cluster.json").exists():
        running = [s.node_id for s in KafkaCluster.load(workdir).status() if s.running]
        if running:
            raise KafkaToolError(f"cannot reset {workdir}: node(s) {running} running; stop first")
        shutil.rmtree(workdir)
    elif workdir.exists() and any(workdir.iterdir()):
        raise KafkaToolError(f"refusing to delete {workdir}: it holds no cluster.json")


def _secure_listeners(args: argparse.Namespace) -> SecureListeners | None:
    if not args.scram_user:
        if args.sasl_plaintext:
            raise KafkaToolError("--sasl-plaintext needs at least one --scram-user")
        return None
    users = {}
    for spec in args.scram_user:
        name, sep, password = spec.partition(":")
        if not sep:
            raise KafkaToolError(f"--scram-user {spec!r}: give NAME:PASSWORD")
        users[name] = password
    return SecureListeners(users=users, sasl_plaintext=args.sasl_plaintext)


def _new_cluster(args: argparse.Namespace) -> KafkaCluster:
    secure = _secure_listeners(args)
    if args.reset:
        _reset_dir(args.dir)
    return KafkaCluster(
        args.dir,
        nodes=args.nodes,
        version=args.version,
        broker_port=args.port or None,
        heap_mb=args.heap_mb,
        secure=secure,
    )


def _start(cluster: KafkaCluster, timeout: float) -> None:
    cluster.start(timeout=timeout)  # logs "N nodes ready in X s" (fetch time excluded)
    _out(f"bootstrap servers: {cluster.bootstrap_servers}")
    if cluster.secure is not None:
        _out(f"SASL_SSL bootstrap servers: {cluster.sasl_ssl_bootstrap_servers}")
        if cluster.secure.sasl_plaintext:
            _out(f"SASL_PLAINTEXT bootstrap servers: {cluster.sasl_plaintext_bootstrap_servers}")
        _out(f"CA certificate (KAFKA__SECURITY__SSL_CAFILE): {cluster.ca_file}")


def cmd_fetch(args: argparse.Namespace) -> int:
    version = resolve_version(args.version)
    started = time.monotonic()
    libs = ensure_libs(version)
    _out(f"Kafka {version} jars in {libs} ({time.monotonic() - started:.1f}s)")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    cluster = _new_cluster(args)
    _start(cluster, args.timeout)
    _out(f"stop with: {sys.executable} -m devtools.kafka stop --dir {cluster.workdir}")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    cluster = _new_cluster(args)
    # SIGTERM (e.g. from a process manager) ends the run like Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _start(cluster, args.timeout)
        _out("running; press Ctrl-C to stop")
        _watch(cluster)
    except KeyboardInterrupt:
        _out("stopping...")
    finally:
        # A second Ctrl-C must not abandon half-stopped JVMs; stop() is bounded anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
    _out("stopped")
    return 0


def _watch(cluster: KafkaCluster) -> None:
    """Block (until KeyboardInterrupt), reporting nodes that stop or come back."""
    running = {n for n in cluster.node_ids if cluster.is_running(n)}
    while True:
        time.sleep(1.0)
        now = {n for n in cluster.node_ids if cluster.is_running(n)}
        for node_id in sorted(running - now):
            log.warning(
                "node %d is no longer running (log: %s)", node_id, cluster.log_path(node_id)
            )
        for node_id in sorted(now - running):
            log.info("node %d is running again", node_id)
        running = now


def cmd_stop(args: argparse.Namespace) -> int:
    cluster = _load(args)
    was_running = [s.node_id for s in cluster.status() if s.running]
    started = time.monotonic()
    cluster.stop(timeout=args.timeout)
    if was_running:
        _out(f"stopped node(s) {was_running} in {time.monotonic() - started:.1f}s")
    else:
        _out("no node was running")
    return 0


def cmd_stop_node(args: argparse.Namespace) -> int:
    cluster = _load(args)
    stopped = cluster.stop_node(args.node, timeout=args.timeout)
    _out(f"node {args.node} stopped" if stopped else f"node {args.node} was not running")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    cluster = _load(args)
    killed = cluster.kill_node(args.node)
    _out(f"node {args.node} killed" if killed else f"node {args.node} was not running")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    cluster = _load(args)
    if cluster.is_running(args.node):
        cluster.stop_node(args.node)
    started = time.monotonic()
    cluster.start_node(args.node, timeout=args.timeout)
    _out(
        f"node {args.node} ready in {time.monotonic() - started:.1f}s "
        f"at {cluster.broker_address(args.node)}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = _load(args)
    _out(
        f"{_plural(len(cluster.node_ids), 'node')}, Kafka {cluster.version}, "
        f"cluster id {cluster.cluster_id}, dir {cluster.workdir}"
    )
    for s in cluster.status():
        state = "running" if s.running else "stopped"
        pid = str(s.pid) if s.pid is not None else "-"
        _out(
            f"node {s.node_id}  {state:<7}  pid {pid:<7}  {s.address}"
            f"  (controller {s.controller_address})"
        )
    _out(f"bootstrap servers: {cluster.bootstrap_servers}")
    if cluster.secure is not None:
        _out(f"SASL_SSL bootstrap servers: {cluster.sasl_ssl_bootstrap_servers}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kafka",
        description="Run a real Apache Kafka (KRaft) on 127.0.0.1 from Maven Central jars.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs, error details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    def add_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help=f"cluster directory (default {DEFAULT_DIR})",
        )

    version_help = f"Kafka version (default ${KAFKA_VERSION_ENV} or {DEFAULT_KAFKA_VERSION})"

    p = add("fetch", cmd_fetch, "fetch the broker jars from Maven Central")
    p.add_argument("--version", help=version_help)

    for name, func, help_ in (
        ("start", cmd_start, "start a cluster in the background"),
        ("run", cmd_run, "start a cluster, block until Ctrl-C/SIGTERM, then stop it"),
    ):
        p = add(name, func, help_)
        add_dir(p)
        p.add_argument(
            "--nodes",
            type=int,
            choices=SUPPORTED_NODE_COUNTS,
            default=1,
            help="combined broker+controller nodes (default 1)",
        )
        p.add_argument(
            "--port",
            type=int,
            default=DEFAULT_PORT,
            help=f"client port of node 1 (default {DEFAULT_PORT}); node i listens on "
            "port+2(i-1) for clients and the next port for its controller; 0 = free ports",
        )
        p.add_argument("--version", help=version_help)
        p.add_argument(
            "--heap-mb", type=int, default=384, help=f"JVM heap per node (max {MAX_HEAP_MB})"
        )
        p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
        p.add_argument(
            "--reset", action="store_true", help="delete the (stopped) cluster's data first"
        )
        p.add_argument(
            "--scram-user",
            action="append",
            metavar="NAME:PASSWORD",
            help="add a SASL_SSL listener (SCRAM-SHA-256/512, throwaway CA) with this user; "
            "repeatable; users are created on a directory's first start only",
        )
        p.add_argument(
            "--sasl-plaintext",
            action="store_true",
            help="with --scram-user: a SASL_PLAINTEXT listener too",
        )

    p = add("stop", cmd_stop, "stop every node")
    add_dir(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")

    p = add("stop-node", cmd_stop_node, "stop one node gracefully (SIGTERM)")
    p.add_argument("node", type=int)
    add_dir(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")

    p = add("kill", cmd_kill, "kill one node (SIGKILL)")
    p.add_argument("node", type=int)
    add_dir(p)

    p = add("restart", cmd_restart, "(stop and) start one node; wait until registered")
    p.add_argument("node", type=int)
    add_dir(p)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")

    p = add("status", cmd_status, "show each node's state, pid and address")
    add_dir(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    # While waiting for readiness, failed probes are expected; aiokafka logs them as errors.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (KafkaToolError, ValueError) as exc:
        summary, _, details = str(exc).partition("\n")
        hint = " (-v for details)" if details and not args.verbose else ""
        print(f"error: {summary or type(exc).__name__}{hint}", file=sys.stderr)
        if details and args.verbose:
            print(details, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
