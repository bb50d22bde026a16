"""What the numbers were measured on: machine, load, Python, library and Kafka versions."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LIBRARIES", "describe", "load_average", "versions"]

LIBRARIES = (
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "aiokafka",
    "faststream",
    "confluent-kafka",
    "httpx",
)


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    with contextlib.suppress(ImportError):
        import confluent_kafka

        found["librdkafka"] = confluent_kafka.libversion()[0]
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _command_output(*argv: str, cwd: Path | None = None) -> str:
    """First line of a tool's output (stdout or stderr), or "" when it is missing or fails."""
    executable = shutil.which(argv[0])
    if executable is None:
        return ""
    try:
        # A fixed argv, no shell.
        done = subprocess.run(  # noqa: S603
            [executable, *argv[1:]], capture_output=True, text=True, timeout=30, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines and done.returncode == 0 else ""


def _nodes(count: int) -> str:
    return f"{count} KRaft node{'' if count == 1 else 's'}"


def _kafka_clusters(clusters: Mapping[int, Sequence[str]]) -> str:
    """`1 KRaft node` for one cluster; with several, each one's size and what ran on it."""
    if len(clusters) <= 1:
        return _nodes(next(iter(clusters), 1))
    return "; ".join(f"{_nodes(n)} for {', '.join(uses)}" for n, uses in clusters.items()) + ";"


def describe(
    repo: Path, kafka_version: str, clusters: Mapping[int, Sequence[str]] | None = None
) -> dict[str, str]:
    """The environment as `name -> value`, in the order the report shows it.

    `clusters`: the node count of each Kafka cluster started -> what ran on it (phase names
    and the like); None for a single one-node cluster.
    """
    commit = _command_output("git", "rev-parse", "--short", "HEAD", cwd=repo)
    dirty = _command_output("git", "status", "--porcelain", "--untracked-files=no", cwd=repo)
    return {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "CPUs": str(os.cpu_count()),
        "CPU model": _cpu_model(),
        "memory": _memory_gib(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Kafka": f"{kafka_version} ({_kafka_clusters(clusters or {1: ()})} on loopback, "
        "devtools.kafka)",
        "Java": _command_output("java", "-version") or "unknown",
        "commit": f"{commit}{' + uncommitted changes' if dirty else ''}" if commit else "unknown",
    }
