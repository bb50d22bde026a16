"""The service as a real process (`python -m app`), which a fault may SIGKILL and restart, or
pause (SIGSTOP) and resume."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from devtools.kafka import REPO_ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """`python -m app` on a fixed port, its settings from `env`, its output in `workdir`.

    It runs in `workdir`, so no `.env` file of the repository is read. Every wait is bounded.
    """

    def __init__(self, workdir: Path, env: Mapping[str, str], *, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self._env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "API__HOST": HOST,
            "API__PORT": str(self.port),
            "API__LOG_LEVEL": "warning",
            **env,
        }
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"app-{self.port}.log"

    async def start(self, *, timeout_s: float = 60, ready: bool = True) -> None:
        """Start and wait until it serves (`/health/ready` answers 200 if `ready`)."""
        if self._process is not None and self._process.returncode is None:
            raise RuntimeError("the service is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app",
                cwd=self.workdir,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.starts += 1
        probe = "/health/ready" if ready else "/health/live"
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while True:
                if self._process.returncode is not None:
                    raise RuntimeError(
                        f"the service exited with {self._process.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(probe)).status_code == 200:
                        return
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"the service did not serve {probe} within {timeout_s}s")
                await asyncio.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and answers nothing until `resume`."""
        if self._process is None or self._process.returncode is not None:
            raise RuntimeError("the service is not running")
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT (harmless when it was not paused)."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGCONT)

    async def kill(self) -> None:
        """SIGKILL (a crash) and reap it."""
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGKILL)
            async with asyncio.timeout(30):
                await process.wait()

    async def stop(self, *, timeout_s: float = 30) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL after `timeout_s`."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await process.wait()
        except TimeoutError:
            await self.kill()
