"""Contender processes: start them in a session of their own, find every process of the tree
(uvicorn's or Node's worker processes, a replying microservice), read their CPU and memory,
and stop the whole tree.

Each contender is started with `start_new_session=True`, so its process group holds every
process it forks: stopping sends SIGTERM to the group, waits, then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from bench.harness import STOP_TIMEOUT_S

__all__ = ["Launch", "Tree", "descendants", "started"]


@dataclass(frozen=True, slots=True)
class Launch:
    """One process to start: its argv, its environment additions and its log file's name."""

    argv: Sequence[str]
    env: Mapping[str, str]
    name: str


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(root: int) -> list[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


@dataclass(slots=True)
class Tree:
    """The processes of one contender (every launch and what each forked)."""

    roots: list[subprocess.Popen[bytes]]

    def pids(self) -> list[int]:
        return [pid for root in self.roots for pid in descendants(root.pid)]

    def exited(self) -> subprocess.Popen[bytes] | None:
        return next((root for root in self.roots if root.poll() is not None), None)

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += procfs.cpu_seconds(pid)
        return total

    def rss_kib(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, KeyError):
                total += procfs.memory_kib(pid)["VmRSS"]
        return total


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # orphans of an exited leader
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # workers still draining after their parent left
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def started(launches: Sequence[Launch], cwd: Path, logs: Path) -> Iterator[Tree]:
    """Start every launch (in order) in its own session; stop them all (in reverse) after."""
    tree = Tree([])
    try:
        for launch in launches:
            with (logs / f"{launch.name}.log").open("ab") as out:
                # A fixed argv from the contender's definition; no shell.
                tree.roots.append(
                    subprocess.Popen(  # noqa: S603
                        list(launch.argv),
                        cwd=cwd,
                        env={**os.environ, **launch.env},
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                    )
                )
        yield tree
    finally:
        for process in reversed(tree.roots):
            _stop_group(process)
