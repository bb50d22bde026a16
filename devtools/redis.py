"""Run a throwaway Redis server on 127.0.0.1 for development and tests, without Docker.

Library use::

    from devtools.redis import RedisServer

    with RedisServer(workdir, port=63790) as server:
        url = server.url  # redis://127.0.0.1:63790/0

Command line (serves until Ctrl-C)::

    python -m devtools.redis .redis --port 63790

Contract
--------
* Binary: ``redis-server`` from ``PATH`` (Debian's ``redis-server`` package;
  ``devtools/system-deps.sh`` installs it).
* State lives in ``directory`` only: ``redis.log`` and nothing else (no RDB snapshot, no
  append-only file: a throwaway server forgets everything when it stops).
* Listens on 127.0.0.1 only, so only this machine's users reach it: a development server,
  never a production one. With ``password`` it requires ``AUTH`` (``requirepass``), for tests
  of code that handles a Redis password.
* The server runs in its own session: a Ctrl-C in the terminal reaches this code, not the
  server. ``stop`` sends SIGTERM and SIGKILLs it after a bounded wait; ``pause`` and
  ``resume`` (SIGSTOP, SIGCONT) freeze it, for tests of a server that does not answer.
* Every wait is bounded. Expected failures raise ``RedisError``; the first line of its message
  is a one-line summary, further lines (if any) are the tail of the server's log.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self
from urllib.parse import quote

from devtools.processes import stop_server

__all__ = ["RedisError", "RedisServer"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_POLL_S = 0.05
_PING_TIMEOUT_S = 1.0
_LOG_TAIL_LINES = 30


class RedisError(RuntimeError):
    """Expected failure of the Redis dev tooling (missing binary, server trouble)."""


def find_server() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisError(
            "redis-server not found on PATH. Install Debian's `redis-server` package "
            "(bash devtools/system-deps.sh does)"
        )
    return Path(found)


class RedisServer:
    """One Redis server on 127.0.0.1:`port` whose log lives in `directory`.

    ``with RedisServer(...) as server:`` starts it and stops it; ``start``/``stop`` do the same
    by hand (``stop`` is idempotent, and a stopped server can be started again on its port).
    """

    def __init__(self, directory: Path, port: int, *, password: str | None = None) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.password = password
        self.log_path = self.directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def version(self) -> str:
        """``redis-server --version``'s first words, e.g. ``Redis server v=7.0.15``."""
        result = subprocess.run(
            [str(find_server()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return " ".join(result.stdout.split()[:3])

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait (at most `timeout` seconds) until it answers PING.

        On failure the server is stopped again and RedisError says why, with its log's tail.
        """
        if self.running:
            return
        deadline = time.monotonic() + timeout
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(find_server()),
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",  # no snapshots
            "--appendonly", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password]
        log.info("starting Redis on %s:%d (%s)", HOST, self.port, self.directory)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
        )
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop(timeout=5.0)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT, should it be paused), then SIGKILL after `timeout`."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_server(
            process,
            "Redis",
            timeout_s=timeout,
            signals=(signal.SIGCONT, signal.SIGTERM),
            error=RedisError,
        )

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- internals -------------------------------------------------------------------------

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RedisError("Redis is not running")
        self._process.send_signal(signum)

    def _answers_ping(self) -> bool:
        """Whether the server answers PING (``+PONG``, or ``-NOAUTH`` when it wants a password)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=_PING_TIMEOUT_S) as sock:
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
        except OSError:
            return False
        return answer.startswith((b"+PONG", b"-NOAUTH"))

    def _wait_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        while not self._answers_ping():
            if process.poll() is not None:
                raise RedisError(
                    f"Redis exited with {process.returncode} while starting\n{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise RedisError(
                    f"Redis did not answer on {HOST}:{self.port} in time\n{self._log_tail()}"
                )
            time.sleep(_POLL_S)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.redis",
        description="Serve a throwaway Redis on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("directory", type=Path, help="folder of its log (created)")
    parser.add_argument("--port", type=int, default=63790)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with (
            RedisServer(args.directory, args.port) as server,
            contextlib.suppress(KeyboardInterrupt),
        ):
            log.info(
                "%s\nready: RATE_LIMIT__REDIS_URL=%s (Ctrl-C stops)", server.version(), server.url
            )
            while server.running:
                time.sleep(1.0)
    except RedisError as error:
        log.error("error: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
