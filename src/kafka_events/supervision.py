"""Supervised background tasks: a task that dies is logged and started again, with backoff.

Every long-lived loop of the library (the relay, the reply reader, a consumer runner's loop)
runs under a `Supervisor`. When the loop raises, the supervisor logs it (ERROR, with the
traceback), counts it (`restarts`, and `kafka_events_task_restarts_total{task}` when a
counter is given), waits (exponential backoff with jitter, from `backoff_initial_ms` up to
`backoff_max_ms`; a loop that ran for `stable_after_s` without failing starts again from the
initial wait) and starts it again. When the loop returns, it is done. `stop()` cancels it and
waits for it, bounded.

`state` says what the task is doing, for readiness probes: `running`, `restarting` (it died
and waits to start again), `stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol

logger = logging.getLogger(__name__)


class TaskState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Supervisor:
    """Runs `loop()` in a task; starts it again, after a pause, each time it raises."""

    def __init__(
        self,
        name: str,
        loop: Callable[[], Awaitable[None]],
        *,
        backoff_initial_ms: int = 100,
        backoff_max_ms: int = 30_000,
        stable_after_s: float = 60.0,
        restarts_counter: _Counter | None = None,
    ) -> None:
        self.name = name
        self._loop = loop
        self._initial_s = backoff_initial_ms / 1000
        self._max_s = backoff_max_ms / 1000
        self._stable_after_s = stable_after_s
        self._counter = restarts_counter
        self._task: asyncio.Task[None] | None = None
        self.state = TaskState.NEW
        self.restarts = 0
        self.last_error: str | None = None  # the type of the last error, for probes

    def start(self) -> None:
        self.state = TaskState.RUNNING
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel the task and wait for it (at most `timeout_s`)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=timeout_s)
        self.state = TaskState.STOPPED

    async def _supervise(self) -> None:
        wait_s = self._initial_s
        while True:
            self.state = TaskState.RUNNING
            started = time.monotonic()
            try:
                await self._loop()
            except Exception as error:
                if time.monotonic() - started >= self._stable_after_s:
                    wait_s = self._initial_s
                self.restarts += 1
                self.last_error = type(error).__name__
                if self._counter is not None:
                    self._counter.inc()
                pause = wait_s * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
                logger.error(
                    "%s failed; starting it again in %.1f s (restart %d)",
                    self.name,
                    pause,
                    self.restarts,
                    exc_info=error,
                )
                self.state = TaskState.RESTARTING
                await asyncio.sleep(pause)
                wait_s = min(wait_s * 2, self._max_s)
            else:
                self.state = TaskState.STOPPED
                return
