"""Helpers shared by the bench entry points (`bench.run`, `bench.edge`, `bench.request_reply`):
loopback ports, logging to stderr, topics, child processes' JSON output and how long a child
may take to stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from devtools.kafka import REPO_ROOT

__all__ = [
    "HOST",
    "STOP_TIMEOUT_S",
    "create_topics",
    "free_port",
    "log",
    "log_tail",
    "run_json",
    "terminate",
]

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 15.0  # how long a stopped server or worker may take before it is killed


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def create_topics(bootstrap_servers: str, names: Sequence[str], replicas: int = 1) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","))
    await admin.start()
    try:
        async with asyncio.timeout(30):
            await admin.create_topics(
                [NewTopic(name, num_partitions=1, replication_factor=replicas) for name in names]
            )
    finally:
        await admin.close()


def log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def run_json(command: list[str], timeout_s: float) -> dict[str, Any]:
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


def terminate(signum: int, _: FrameType | None) -> None:
    """A SIGTERM handler that unwinds through every `finally`: servers and brokers stop."""
    raise SystemExit(128 + signum)
