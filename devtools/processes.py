"""Stopping a child process: SIGTERM, a bounded wait, then SIGKILL.

Kept apart from `devtools.serve` so that the bench can use it without importing the app's
settings.
"""

from __future__ import annotations

import signal
import subprocess
import sys

__all__ = ["STOP_TIMEOUT_S", "stop_process"]

STOP_TIMEOUT_S = 30.0


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
