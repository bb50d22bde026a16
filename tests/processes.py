"""The service as a real process (`python -m app`), for tests that signal or browse it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.conftest import eventually, repo_root


@asynccontextmanager
async def app_process(
    env: dict[str, str], workdir: Path, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app` on `port`, started, then waited for on exit (killed if still running)."""
    with (workdir / f"app-{port}.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(repo_root()), "API__PORT": str(port), **env},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def live() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"the app exited with {process.returncode}")
                try:
                    return (await client.get("/health/live")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(live, timeout_s=30, interval_s=0.1)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(30):
            await process.wait()
