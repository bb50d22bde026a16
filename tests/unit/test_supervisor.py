"""The worker supervisor notices a worker that died while being pinged at once, not after the
health-check timeout (`app.supervisor`)."""

from __future__ import annotations

import os
import time

import uvicorn
from uvicorn.supervisors.multiprocess import Process

from app.supervisor import release_child_end

HEALTHCHECK_TIMEOUT_S = 30.0  # as `python -m app` sets it


class DiesWhenPinged(Process):
    """A worker that takes one ping and exits without answering (a crash, a failed start)."""

    def target(self, sockets: object = None) -> None:  # runs in the spawned child
        self.child_conn.recv()
        time.sleep(0.2)  # the parent is waiting for the answer by now
        os._exit(3)


def _pinged_worker(*, released: bool, timeout_s: float) -> tuple[bool, float]:
    worker = DiesWhenPinged(uvicorn.Config("app.main:create_app", factory=True), sockets=[])
    worker.start()
    if released:
        release_child_end(worker)
    try:
        started = time.monotonic()
        alive = worker.is_alive(timeout=timeout_s)
        return alive, time.monotonic() - started
    finally:
        worker.kill()
        worker.join()


def test_a_worker_that_dies_while_pinged_is_seen_dead_at_once() -> None:
    alive, waited_s = _pinged_worker(released=True, timeout_s=HEALTHCHECK_TIMEOUT_S)

    assert not alive
    assert waited_s < 5  # uvicorn's own parent waits out the 30 s: see the next test


def test_without_the_release_the_ping_waits_for_its_timeout() -> None:
    # What `WorkerSupervisor` mends, with a 3 s timeout so as not to wait 30 s.
    alive, waited_s = _pinged_worker(released=False, timeout_s=3.0)

    assert not alive
    assert waited_s >= 3.0
