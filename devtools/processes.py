"""Stopping a child process: a signal, a bounded wait, then SIGKILL.

Kept apart from `devtools.serve` so that the bench can use it without importing the app's
settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["KILL_WAIT_S", "STOP_TIMEOUT_S", "stop_process", "stop_server"]

STOP_TIMEOUT_S = 30.0
KILL_WAIT_S = 10.0  # how long a SIGKILLed process may take to be reaped

log = logging.getLogger(__name__)


def stop_process(
    process: subprocess.Popen[bytes], name: str, *, timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM `process`, wait up to `timeout_s`, then SIGKILL it (saying so on stderr)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop within {timeout_s:.0f}s; killing it", file=sys.stderr)
        process.kill()
        process.wait(timeout=timeout_s)


def stop_server(
    process: subprocess.Popen[bytes],
    name: str,
    *,
    timeout_s: float,
    signals: Sequence[signal.Signals] = (signal.SIGTERM,),
    kill_group: bool = False,
    error: type[Exception] = RuntimeError,
) -> None:
    """Stop a server started in a session of its own (`start_new_session=True`).

    Send it `signals` in turn and wait up to `timeout_s`, then SIGKILL it, with a warning.
    With `kill_group`, its whole process group is SIGKILLed in any case, for servers whose
    children outlive them (PostgreSQL's backends). Raises `error` if it survives SIGKILL for
    `KILL_WAIT_S`.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            for signum in signals:
                process.send_signal(signum)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs: killing it", name, timeout_s)
            if not kill_group:
                process.kill()
    if kill_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired as exc:
        raise error(f"{name} (pid {process.pid}) survived SIGKILL") from exc
