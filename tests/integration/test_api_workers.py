"""`python -m app` with `API__WORKERS=2`: two processes, each with its own app and producers,
and one `/metrics` page summing both.

The service runs as a real process against a real broker, logging JSON: the `pid` of each line
tells which worker process served a request, so no response has to expose it.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import read_all
from tests.helpers.processes import app_process, run_to_end
from tests.helpers.waiting import closed_port, eventually

pytestmark = pytest.mark.kafka


def _lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _pids(lines: list[dict[str, Any]], logger: str, message: str) -> set[int]:
    return {
        line["pid"] for line in lines if line["logger"] == logger and message in line["message"]
    }


async def test_two_workers_serve_with_a_producer_each_and_stop_gracefully(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    api_port = closed_port()
    env = {
        "API__WORKERS": "2",
        "LOG__FORMAT": "json",
        "KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "VERIFICATION__TOPIC": topic,
        "REPLY__TOPIC": f"{topic}.reply",
        "REPLY__REPLICATION_FACTOR": "1",
        "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/store.db",
        "RATE_LIMIT__ENABLED": "false",
        "TMPDIR": str(tmp_path / "tmp"),  # where the metrics' private directory goes
    }
    (tmp_path / "tmp").mkdir()
    log = tmp_path / f"app-{api_port}.log"
    url = f"http://127.0.0.1:{api_port}/verification-emails"
    # a connection per request, so that both processes get to accept some
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    late: list[httpx.Response | httpx.TransportError] = []

    async with (
        app_process(env, tmp_path, api_port) as master,
        httpx.AsyncClient(timeout=30, limits=limits) as client,
    ):

        async def both_started() -> bool:
            lines = await asyncio.to_thread(_lines, log)
            return len(_pids(lines, "uvicorn.error", "Application startup complete")) == 2

        await eventually(both_started, timeout_s=60, interval_s=0.1)

        async def post(i: int) -> httpx.Response:
            body = {"email": f"w{i}@example.com", "redirect_url": "https://x.example/"}
            return await client.post(url, json=body)

        responses = await asyncio.gather(*(post(i) for i in range(200)))
        # each scrape is answered by one process and counts the publishes of both
        scrapes = [
            _delivered(await client.get(f"http://127.0.0.1:{api_port}/metrics"), topic)
            for _ in range(6)
        ]

        # then requests in flight when the master gets SIGTERM
        async def post_late(i: int) -> None:
            try:
                late.append(await post(i))
            except httpx.TransportError as error:  # refused once the workers stopped listening
                late.append(error)

        tasks = [asyncio.create_task(post_late(i)) for i in range(200, 300)]
        await eventually(lambda: _at_least(late, 10), timeout_s=30, interval_s=0.01)
        stopped_at = asyncio.get_running_loop().time()
        master.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks)
        async with asyncio.timeout(30):
            status = await master.wait()
        exit_s = asyncio.get_running_loop().time() - stopped_at

    assert [r.status_code for r in responses] == [202] * 200
    assert scrapes == [(200.0, 200.0, 1.0)] * 6  # and one relay replays the shared store
    assert list((tmp_path / "tmp").iterdir()) == []  # the metrics' directory is removed
    assert all(isinstance(r.json()["offset"], int) for r in responses)
    assert status == 0
    assert exit_s < 20
    lines = _lines(log)
    served = _pids(lines, "uvicorn.access", '"POST /verification-emails HTTP/1.1" 202')
    connected = _pids(lines, "kafka_events.producer.lifecycle", "publisher replicated connected")
    stopped = _pids(lines, "kafka_events.producer.lifecycle", "publisher replicated stopped")
    shut_down = _pids(lines, "uvicorn.error", "Application shutdown complete")
    assert len(served) == 2  # both processes served requests
    assert master.pid not in served
    assert connected == stopped == shut_down == served  # each its own producer, closed
    late_ok = [r for r in late if isinstance(r, httpx.Response) and r.status_code == 202]
    assert all(isinstance(r, httpx.TransportError) or r.status_code == 202 for r in late)
    accepted = {r.json()["event_id"] for r in [*responses, *late_ok]}
    records = await read_all(kafka_broker.bootstrap_servers, topic, expected=len(accepted))
    assert accepted <= {json.loads(r.value)["event_id"] for r in records}


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_worker_that_cannot_start_stops_the_service_with_status_3(
    tmp_path: Path, workers: int
) -> None:
    # The store's directory cannot be created (a file is in the way): every lifespan fails.
    (tmp_path / "not-a-directory").write_text("")
    env = {
        "API__WORKERS": str(workers),
        "API__PORT": str(closed_port()),
        "KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",  # no answer: not a refusal
        "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/not-a-directory/store.db",
        "TMPDIR": str(tmp_path),
    }

    status, stdout, stderr = await run_to_end("app", env, tmp_path, timeout_s=60)

    assert status == 3, stdout + stderr  # an orchestrator sees a failure, and why in the log
    assert "Application startup failed" in stdout + stderr
    left = await asyncio.to_thread(lambda: [p.name for p in tmp_path.iterdir()])
    assert left == ["not-a-directory"]  # the metrics' directory is removed


async def _at_least(answers: list[httpx.Response | httpx.TransportError], count: int) -> bool:
    return len(answers) >= count


def _delivered(page: httpx.Response, topic: str) -> tuple[float, float, float]:
    """Publishes delivered to `topic`, `202`s counted by the HTTP metrics, and relays
    replaying, on `page`."""
    assert page.status_code == 200
    published = answered = replaying = 0.0
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "kafka_events_publish_total" and labels["topic"] == topic:
                published += sample.value if labels["outcome"] == "delivered" else 0
            if sample.name == "http_requests_total" and labels["status"] == "202":
                answered += sample.value
            if sample.name == "kafka_events_relay_replaying":
                replaying += sample.value
    return published, answered, replaying
