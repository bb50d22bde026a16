"""`make run`'s supervisor end to end: a real uvicorn server, a real broker, Ctrl-C stops all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import read_at
from tests.helpers.waiting import closed_port, closed_ports, eventually, repo_root

pytestmark = pytest.mark.kafka

BODY = {"email": "grace@example.com", "redirect_url": "https://app.example.com/verify"}


async def _serve_and_post(env: dict[str, str], port: int, bootstrap: str | None, log: Path) -> None:
    # Output goes to a file: a pipe nobody reads until exit would fill up and block the child.
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devtools.serve",
            cwd=repo_root(),
            env={**os.environ, **env, "API__PORT": str(port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            async def ready() -> bool:
                if process.returncode is not None:  # it gave up: no use waiting
                    output = await asyncio.to_thread(log.read_text)
                    pytest.fail(f"exited with {process.returncode}:\n{output}")
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout_s=90, interval_s=0.2)
            response = await client.post("/verification-emails", json=BODY)
        assert response.status_code == 202, response.text
        receipt = response.json()
        record = await read_at(
            bootstrap or env["KAFKA__BOOTSTRAP_SERVERS"],
            receipt["topic"],
            receipt["partition"],
            receipt["offset"],
        )
        assert record.key == b"grace@example.com"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            await process.wait()
    if process.returncode != 0:
        pytest.fail(await asyncio.to_thread(log.read_text))


async def test_make_run_uses_a_reachable_broker(kafka_broker: KafkaCluster, tmp_path: Path) -> None:
    env = {"KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers}

    await _serve_and_post(env, closed_port(), None, tmp_path / "serve.log")

    assert "using the Kafka broker at" in (tmp_path / "serve.log").read_text()


async def test_make_run_starts_a_local_broker_when_none_is_reachable(tmp_path: Path) -> None:
    broker_port = closed_ports(2)  # the broker's port, and its controller's after it
    env = {
        "KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
        "DEVTOOLS_KAFKA_PORT": str(broker_port),
        "DEVTOOLS_KAFKA_DIR": str(tmp_path / "dev"),
    }

    await _serve_and_post(env, closed_port(), f"127.0.0.1:{broker_port}", tmp_path / "serve.log")

    # the broker it started is stopped with it; its data stays for the next run
    assert KafkaCluster.load(tmp_path / "dev").status()
    assert not any(KafkaCluster.load(tmp_path / "dev").is_running(n) for n in (1,))
