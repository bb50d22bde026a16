"""The HTTP edge of `python -m app`, against the real server process and a real broker.

A slow or stalled client is cut off (head and body timeouts, 408), an oversized head or too
many header fields are answered 431 while normal requests go on, the connection bound makes
room by dropping stalled heads and answers 503 when every connection is busy, the descriptor
limit is raised at start-up, and every error the server or the app answers is JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.kafka import KafkaCluster
from tests.helpers.processes import app_process
from tests.helpers.waiting import closed_port, eventually, repo_root

pytestmark = pytest.mark.kafka

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 20
# A cut-off must come within its timeout plus scheduling slack, not at some later point.
CUT_OFF_BY_S = 10.0
BODY = {"email": "edge@example.com", "redirect_url": "https://app.example.com/verify"}
POST_HEAD = (
    b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
)


def _env(cluster: KafkaCluster, topic: str, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "VERIFICATION__TOPIC": topic,
        "REPLY__TOPIC": f"{topic}.reply",
        "REPLY__REPLICATION_FACTOR": "1",
        "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/store.db",
        "RATE_LIMIT__ENABLED": "false",
        "SERVER__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "SERVER__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "SERVER__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }


@contextlib.asynccontextmanager
async def _served(kafka_broker: KafkaCluster, topic: str, tmp_path: Path) -> AsyncIterator[int]:
    port = closed_port()
    async with app_process(_env(kafka_broker, topic, tmp_path), tmp_path, port):
        yield port


async def _read_answer(reader: asyncio.StreamReader, timeout_s: float) -> tuple[int, Any, float]:
    """Read until the server closes or `timeout_s` passes: (status, JSON body, seconds taken);
    status 0 if nothing came."""
    started = time.monotonic()
    data = b""
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                data += chunk
    elapsed = time.monotonic() - started
    if not data:
        return 0, None, elapsed
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body), elapsed


async def _normal_request(port: int) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as client:
        return await client.post(f"http://127.0.0.1:{port}/verification-emails", json=BODY)


async def test_slow_and_stalled_clients_are_cut_off_with_408(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    async with _served(kafka_broker, topic, tmp_path) as port:
        # slowloris: a head trickled a byte at a time, never finished
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"X-Slow: " + b"a" * 100:
                    await asyncio.sleep(0.5)
                    slow_writer.write(bytes([byte]))
                    await slow_writer.drain()

        trickling = asyncio.create_task(trickle())
        # a whole head, then one byte of the 100 announced
        body_reader, body_writer = await asyncio.open_connection("127.0.0.1", port)
        body_writer.write(POST_HEAD + b"{")
        # a connection that sends nothing
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)

        normal = await _normal_request(port)
        slow, stalled, idle = await asyncio.gather(
            _read_answer(slow_reader, CUT_OFF_BY_S),
            _read_answer(body_reader, CUT_OFF_BY_S),
            _read_answer(idle_reader, CUT_OFF_BY_S),
        )
        trickling.cancel()
        await _close((slow_writer, body_writer, idle_writer))

    assert normal.status_code == 202
    assert slow[0] == 408
    assert slow[1]["error"] == "request_timeout"
    assert "head" in slow[1]["detail"]
    assert stalled[0] == 408
    assert stalled[1]["error"] == "request_timeout"
    assert "body" in stalled[1]["detail"]
    assert idle[0] == 0  # closed without an answer: nothing was asked
    for _, _, elapsed in (slow, stalled, idle):
        assert elapsed < CUT_OFF_BY_S  # closed by the server, not by the read's own timeout


async def _send_head(port: int, head: bytes) -> tuple[int, Any, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with contextlib.suppress(ConnectionError):
        writer.write(head)
        await writer.drain()
    try:
        return await _read_answer(reader, CUT_OFF_BY_S)
    finally:
        await _close((writer,))


async def _close(writers: Iterable[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_oversized_heads_and_too_many_fields_get_431_while_others_are_served(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    get = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    heads = {
        # more than SERVER__MAX_HEADER_BYTES (16 KiB), arriving whole or in pieces
        "20 KB": get + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        "8 MiB": get + b"X-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n",
        # more than SERVER__MAX_HEADER_COUNT (100) small fields, and 20,000 of them
        "150 fields": get + b"".join(b"x%d: 1\r\n" % i for i in range(150)) + b"\r\n",
        "20000 fields": get + b"".join(b"x%d: 1\r\n" % i for i in range(20_000)) + b"\r\n",
    }
    async with _served(kafka_broker, topic, tmp_path) as port:
        answers = await asyncio.gather(
            *(_send_head(port, head) for head in heads.values()),
            _normal_request(port),
        )
    *refused, normal = answers
    assert isinstance(normal, httpx.Response)
    assert normal.status_code == 202
    for name, answer in zip(heads, refused, strict=True):
        assert isinstance(answer, tuple)
        status, body, _ = answer
        assert status == 431, name
        assert body["error"] == "headers_too_large", name


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


async def test_huge_heads_are_cut_off_before_they_are_buffered(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    port = closed_port()
    get = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    async with app_process(_env(kafka_broker, topic, tmp_path), tmp_path, port) as process:
        before = _peak_rss_kib(process.pid)
        # four 32 MiB fields at once, and one trickled in 4 KiB pieces
        whole = [_send_head(port, get + b"X-Big: " + b"a" * (32 << 20)) for _ in range(4)]

        async def trickled() -> tuple[int, Any, float]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with contextlib.suppress(ConnectionError):
                writer.write(get + b"X-Big: ")
                for _ in range(64):
                    writer.write(b"a" * 4096)
                    await writer.drain()
                    await asyncio.sleep(0.01)
            try:
                return await _read_answer(reader, CUT_OFF_BY_S)
            finally:
                await _close((writer,))

        answers = await asyncio.gather(*whole, trickled())
        normal = await _normal_request(port)
        after = _peak_rss_kib(process.pid)

    assert [status for status, _, _ in answers] == [431] * 5
    assert normal.status_code == 202
    # one 32 MiB field buffered whole would raise the peak by at least that much
    assert after - before < 16 * 1024, (before, after)


async def test_pipelined_requests_are_answered_in_order(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    body = json.dumps(BODY).encode()
    post = (
        b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    live = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    async with _served(kafka_broker, topic, tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post + live + post)  # in one write: the second and third arrive early
        statuses = []
        async with asyncio.timeout(15):
            for _ in range(3):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                statuses.append(int(head.split(b" ", 2)[1]))
        await _close((writer,))

    assert statuses == [202, 200, 202]


async def test_connection_bound_answers_503_when_full_and_drops_stalled_heads_for_room(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    async with _served(kafka_broker, topic, tmp_path) as port:
        # every connection busy: past its head, its body still coming
        busy = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        for _, writer in busy:
            writer.write(POST_HEAD)
        await asyncio.sleep(0.5)  # the server has read every head
        while_full = await _send_head(port, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        await _close(writer for _, writer in busy)

        async def served_again() -> bool:
            return (await _normal_request(port)).status_code == 202

        await eventually(served_again, timeout_s=15, interval_s=0.2)

        # a flood of stalled heads, five times the bound: each new connection drops the
        # oldest head still awaited, so a normal request is served during the flood
        flood = []
        for _ in range(5 * MAX_CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            flood.append((reader, writer))
        during_flood = await _normal_request(port)
        dropped = 0
        for reader, _ in flood:
            await _read_answer(reader, 0.05)
            dropped += reader.at_eof()  # closed by the server
        await _close(writer for _, writer in flood)

    status, body, _ = while_full
    assert status == 503
    assert body["error"] == "overloaded"
    assert during_flood.status_code == 202
    assert dropped >= 4 * MAX_CONNECTIONS  # the flood beyond the bound was dropped


async def test_the_descriptor_limit_is_raised_to_the_hard_limit(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    _, hard_before = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard_before < 4096:
        pytest.skip(f"the hard descriptor limit is {hard_before}: nothing to raise to")
    port = closed_port()
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "API__PORT": str(port)}
    env |= _env(kafka_broker, topic, tmp_path)
    log = tmp_path / "app.log"
    # prlimit sets the child's own limits: soft 1024 (the usual default), hard 4096
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            "prlimit",
            "--nofile=1024:4096",
            sys.executable,
            "-m",
            "app",
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def live() -> bool:
                assert process.returncode is None, log.read_text()
                try:
                    return (await client.get("/health/live")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(live, timeout_s=30, interval_s=0.1)
        limits = await asyncio.to_thread(Path(f"/proc/{process.pid}/limits").read_text)
    finally:
        process.kill()
        await process.wait()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line
    assert "descriptor limit 4096 (was 1024, hard limit 4096)" in await asyncio.to_thread(
        log.read_text
    )


async def test_every_error_answer_is_json(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    async with (
        _served(kafka_broker, topic, tmp_path) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client,
    ):
        answers = {
            404: await client.get("/no-such-page"),
            405: await client.delete("/verification-emails"),
            413: await client.post(
                "/verification-emails",
                content=b"{" + b" " * 20_000 + b"}",
                headers={"content-type": "application/json"},
            ),
            422: await client.post("/verification-emails", json={"email": "not an address"}),
        }
        malformed = await _send_head(port, b"NOT HTTP AT ALL\r\n\r\n")
    for status, response in answers.items():
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) >= {"error", "detail"}
    assert malformed[0] == 400
    assert malformed[1]["error"] == "bad_request"
