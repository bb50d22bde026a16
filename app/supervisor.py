"""uvicorn's worker supervisor, with a dead worker noticed at its next ping.

uvicorn's `Multiprocess` pings each worker every half second over a pipe and waits up to
`timeout_worker_healthcheck` (30 s here, see `app.__main__`) for the answer. The parent keeps
its copy of the worker's end of that pipe open, so a worker that dies after the ping was sent
(a lifespan that failed, a crash) leaves the parent waiting out the whole timeout: no answer,
but no end of file either. `WorkerSupervisor` closes the parent's copy once each worker has
started, so the worker's death closes the pipe and the ping returns at once.
"""

from __future__ import annotations

from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

__all__ = ["WorkerSupervisor", "release_child_end"]


def release_child_end(process: Process) -> None:
    """Close the parent's copy of a started worker's end of the ping pipe (idempotent).

    The worker has its own copy from the moment `start()` returns (uvicorn spawns it).
    """
    process.child_conn.close()


class WorkerSupervisor(Multiprocess):
    """`Multiprocess` whose pings end when a worker dies, not after their timeout."""

    def init_processes(self) -> None:
        super().init_processes()
        self._release_child_ends()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()  # may have started replacements
        self._release_child_ends()

    def restart_all(self) -> None:
        super().restart_all()
        self._release_child_ends()

    def _release_child_ends(self) -> None:
        for process in self.processes:
            release_child_end(process)
