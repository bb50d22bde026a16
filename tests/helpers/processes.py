"""The service as a real process (`python -m app`, `python -m app.worker`), for tests that
signal or browse it, or wait for it to exit by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.helpers.waiting import eventually, repo_root


@asynccontextmanager
async def app_process(
    env: dict[str, str], workdir: Path, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app` on `port`, started, then waited for on exit (killed if still running)."""
    with (workdir / f"app-{port}.log").open("ab") as log:
        process = await _python_m("app", {"API__PORT": str(port), **env}, workdir, stdout=log)
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


async def run_to_end(
    module: str, env: Mapping[str, str], cwd: Path, *, timeout_s: float = 60
) -> tuple[int, str, str]:
    """`python -m module` in `cwd` until it exits by itself (killed after `timeout_s`): its
    status, stdout and stderr."""
    process = await _python_m(
        module, env, cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@asynccontextmanager
async def worker_process(
    env: Mapping[str, str], workdir: Path, log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app.worker`, its output in `log_path`; on leaving, SIGTERM and a wait of up to
    30 s (then SIGKILL). Its exit status is the process's `returncode` afterwards."""
    with log_path.open("wb") as log:
        process = await _python_m("app.worker", env, workdir, stdout=log)
    try:
        yield process
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process, *, timeout_s: float = 30) -> None:
    """SIGTERM `process` unless it has exited, wait up to `timeout_s`, then SIGKILL it."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def _python_m(
    module: str,
    env: Mapping[str, str],
    cwd: Path,
    *,
    stdout: int | IO[bytes],
    stderr: int = asyncio.subprocess.STDOUT,
) -> asyncio.subprocess.Process:
    """`python -m module` in `cwd`, the project importable, `env` over this process's."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(repo_root()), **env},
        stdout=stdout,
        stderr=stderr,
    )


def mailing_env(
    *,
    bootstrap_servers: str,
    topic: str,
    store_url: str,
    admin_token: str,
    smtp_port: int,
    smtp_password: str,
    log_format: str,
) -> dict[str, str]:
    """The API's and the worker's settings for a run that sends real email, logged at debug."""
    return {
        "LOG__FORMAT": log_format,
        "LOG__LEVEL": "debug",
        "KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
        "VERIFICATION__TOPIC": topic,
        "REPLY__TOPIC": f"{topic}.reply",
        "REPLY__REPLICATION_FACTOR": "1",
        "STORE__URL": store_url,
        "ADMIN__TOKEN": admin_token,
        "RATE_LIMIT__ENABLED": "false",
        "SMTP__BACKEND": "smtp",
        "SMTP__HOST": "127.0.0.1",
        "SMTP__PORT": str(smtp_port),
        "SMTP__USERNAME": "mailer",
        "SMTP__PASSWORD": smtp_password,
        "WORKER__GROUP_ID": f"g-{topic}",
        "WORKER__DEAD_LETTER_TOPIC": f"{topic}.dlq",
    }
