"""`make run`: a local Kafka broker unless one is reachable, then the API and the worker.

Ctrl-C stops it all.

- Reads the same settings as the app (environment and `.env`).
- If no broker in `KAFKA__BOOTSTRAP_SERVERS` accepts a TCP connection, starts a one-node
  broker on 127.0.0.1:9092 whose data persists in `.kafka/dev` between runs, and points the
  app at it (`DEVTOOLS_KAFKA_PORT` and `DEVTOOLS_KAFKA_DIR` change both).
- Runs `python -m app` (the API, with the HTTP edge's limits of `SERVER__*`: head and body
  timeouts, head size, a connection bound, the descriptor limit raised; see `app.server`) and
  `python -m app.worker` (the verification-email worker;
  with the default `SMTP__BACKEND=log` it logs each email instead of sending it) side by side,
  with the same environment, and waits. Ctrl-C or SIGTERM stops both (graceful, bounded), then
  the broker if this command started it. If either process exits, the other is stopped too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app.config import SettingsError, load_settings
from devtools.kafka import REPO_ROOT, KafkaCluster, KafkaToolError
from devtools.processes import stop_process

# Overridable so the end-to-end test of this command never touches a developer's broker.
LOCAL_PORT = int(os.environ.get("DEVTOOLS_KAFKA_PORT", "9092"))
LOCAL_BROKER = f"127.0.0.1:{LOCAL_PORT}"
DEV_DIR = Path(os.environ.get("DEVTOOLS_KAFKA_DIR", str(REPO_ROOT / ".kafka" / "dev")))


def reachable(servers: list[str], timeout_s: float = 1.0) -> bool:
    """True if any of `host:port` accepts a TCP connection."""
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


def local_broker() -> KafkaCluster:
    if (DEV_DIR / "cluster.json").exists():
        return KafkaCluster.load(DEV_DIR)
    return KafkaCluster(DEV_DIR, nodes=1, broker_port=LOCAL_PORT)


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2

    stopping = False

    def request_stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    env = dict(os.environ)
    cluster: KafkaCluster | None = None
    if reachable(settings.kafka.bootstrap_list):
        print(f"using the Kafka broker at {settings.kafka.bootstrap_servers}")
    else:
        print(f"no broker at {settings.kafka.bootstrap_servers}; starting one on {LOCAL_BROKER}")
        cluster = local_broker()
        try:
            started = time.monotonic()
            cluster.start()
        except KafkaToolError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"broker ready in {time.monotonic() - started:.1f}s (data in {DEV_DIR})")
        env["KAFKA__BOOTSTRAP_SERVERS"] = cluster.bootstrap_servers

    api = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=REPO_ROOT)
    worker = subprocess.Popen([sys.executable, "-m", "app.worker"], env=env, cwd=REPO_ROOT)
    print(f"API on http://{settings.api.host}:{settings.api.port} (docs at /docs); Ctrl-C stops")
    edge = settings.server
    print(
        f"HTTP limits: head {edge.header_timeout_s:g} s, body {edge.body_timeout_s:g} s, "
        f"{edge.max_header_bytes} header bytes, {edge.max_connections} connections"
    )
    print(f"worker sending emails via {settings.smtp.backend.value}")
    processes = [(api, "the API"), (worker, "the worker")]
    try:
        while not stopping and all(p.poll() is None for p, _ in processes):
            time.sleep(0.2)
    finally:
        # signal both first, so they stop side by side; then wait for each, bounded
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, name in processes:
            stop_process(process, name)
        if cluster is not None:
            print("stopping the local broker")
            cluster.stop()
    if stopping:
        return 0
    for process, name in processes:
        if process.returncode not in (None, 0):
            print(f"{name} exited with status {process.returncode}", file=sys.stderr)
    return next((p.returncode for p, _ in processes if p.returncode), 1)


if __name__ == "__main__":
    sys.exit(main())
