"""Deadlines of one duration on one loop timer: `asyncio.timeout`'s semantics, cheaper per scope.

A publisher bounds every publish by its policy's deadline and every send stage by its attempt
timeout. With `asyncio.timeout` each of those scopes arms a loop timer and cancels it again,
a good part of a publish's CPU. All scopes of one `Deadlines` have the same duration, so they
expire in the order they were entered: the scopes wait in an insertion-ordered dict (a scope
leaves it in O(1) when it ends), and one loop timer stays armed for the oldest one.

On time: the timer is armed for a moment no later than the oldest open scope's deadline
(when that scope ends first, the timer fires early, finds nothing due, and is armed again for
the next one), and it expires every scope that is due when it fires. A late loop delays it as
it would delay `asyncio.timeout`'s timers. Bounded: it holds exactly the open scopes, one per
publish in flight, and at most one timer. Supervised: the timer callback cannot end without
arming the timer again while scopes are open, whatever expiring one of them raised.

An expired scope cancels its task; leaving the scope turns that cancellation into
`TimeoutError`, unless the task was also cancelled by someone else (then the cancellation
propagates), exactly as `asyncio.timeout` does (`Task.cancelling()` / `uncancel()`).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

# A loop timer is due within this much of its time: libuv's (uvloop's) timers count
# milliseconds; asyncio's loop is finer.
_RESOLUTION_S = 0.001


class Deadline:
    """One scope: use `with deadlines.scope():` inside a task."""

    __slots__ = ("_cancelling", "_deadlines", "_expired", "_task", "when")

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[object], when: float) -> None:
        self._deadlines = deadlines
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self.when = when

    def expired(self) -> bool:
        """Whether the deadline passed while the scope was open (as `Timeout.expired()`)."""
        return self._expired

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._deadlines._open.pop(self, None)
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


class Deadlines:
    """Scopes of `duration_s` each, on one loop timer (see the module's docstring)."""

    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self._open: dict[Deadline, None] = {}  # in the order entered: deadline order
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """The scopes open now."""
        return len(self._open)

    def scope(self) -> Deadline:
        """A scope of the current task that expires `duration_s` from now.

        Raises:
            RuntimeError: not called from a task.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a task")
        if loop is not self._loop:
            self._rebind(loop)
        deadline = Deadline(self, task, loop.time() + self.duration_s)
        self._open[deadline] = None
        if self._timer is None:
            self._arm(loop, deadline.when)
        return deadline

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new loop (a publisher started again in another one): the old loop's scopes and
        timer can never fire there."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open.clear()
        self._loop = loop

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time() + _RESOLUTION_S
        try:
            while self._open:
                oldest = next(iter(self._open))
                if oldest.when > now:
                    break
                del self._open[oldest]
                oldest._expire()
        finally:
            if self._open:
                self._arm(loop, next(iter(self._open)).when)
