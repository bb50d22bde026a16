"""The service process killed or stopped under load: what was accepted is not lost.

The app runs as a real uvicorn process (`python -m app`) against a real broker.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest

from devtools.kafka import KafkaCluster
from kafka_events.store import SqlStore, Status
from tests.helpers.kafka import read_all
from tests.helpers.processes import app_process
from tests.helpers.waiting import closed_port, closed_ports, eventually

pytestmark = pytest.mark.kafka


async def test_an_outbox_app_killed_before_publishing_loses_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broker_port, api_port = closed_ports(2), closed_port()  # broker and controller ports
    topic = "t-outbox-crash"
    store_url = f"sqlite+aiosqlite:///{tmp_path}/outbox.db"
    env = {
        "KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "KAFKA__POLICIES__REPLICATED__OUTBOX": "true",
        "KAFKA__PRODUCER__CONNECT_TIMEOUT_MS": "500",
        "KAFKA__PRODUCER__RECONNECT_BACKOFF_MAX_MS": "300",
        "REPLAY__INTERVAL_MS": "100",
        "REPLAY__BACKOFF_MAX_MS": "300",
        "STORE__URL": store_url,
        "VERIFICATION__TOPIC": topic,
    }
    url = f"http://127.0.0.1:{api_port}/verification-emails"

    # No broker yet: every request is accepted into the outbox, then the app is SIGKILLed.
    async with app_process(env, tmp_path, api_port) as first, httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    url, json={"email": f"u{i}@example.com", "redirect_url": "https://x.example/"}
                )
                for i in range(40)
            )
        )
        first.send_signal(signal.SIGKILL)
    accepted = {r.json()["event_id"] for r in responses if r.status_code == 202}

    cluster = KafkaCluster(tmp_path_factory.mktemp("outbox"), nodes=1, broker_port=broker_port)
    await asyncio.to_thread(cluster.start)
    try:
        async with app_process(env, tmp_path, api_port):
            records = await read_all(cluster.bootstrap_servers, topic, expected=40, timeout_s=60)
    finally:
        await asyncio.to_thread(cluster.stop)

    assert [r.status_code for r in responses] == [202] * 40
    assert {json.loads(r.value)["event_id"] for r in records} == accepted


async def test_sigterm_under_load_finishes_or_records_every_accepted_request(
    kafka_broker: KafkaCluster, tmp_path: Path
) -> None:
    api_port = closed_port()
    topic = "t-sigterm"
    store_url = f"sqlite+aiosqlite:///{tmp_path}/sigterm.db"
    env = {
        "KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "STORE__URL": store_url,
        "VERIFICATION__TOPIC": topic,
        # a long linger keeps messages in flight when the signal arrives
        "KAFKA__POLICIES__REPLICATED__LINGER_MS": "300",
    }
    url = f"http://127.0.0.1:{api_port}/verification-emails"
    answers: list[httpx.Response | Exception] = []

    async with (
        app_process(env, tmp_path, api_port) as process,
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client,
    ):

        async def one(i: int) -> None:
            body = {"email": f"load{i}@example.com", "redirect_url": "https://x.example/"}
            try:
                answers.append(await client.post(url, json=body))
            except httpx.TransportError as error:  # refused once the server stopped listening
                answers.append(error)

        tasks = [asyncio.create_task(one(i)) for i in range(300)]
        await eventually(lambda: _some(answers, 20), timeout_s=30, interval_s=0.01)
        stopped_at = asyncio.get_running_loop().time()
        process.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks)
        async with asyncio.timeout(30):
            await process.wait()
        exit_s = asyncio.get_running_loop().time() - stopped_at

    ok = [
        a.json()["event_id"]
        for a in answers
        if isinstance(a, httpx.Response) and a.status_code == 202
    ]
    refused = [a for a in answers if isinstance(a, httpx.Response) and a.status_code == 503]
    store = SqlStore(store_url)
    await store.open()
    kept = await store.list(limit=1000)
    await store.close()
    on_topic = await read_all(kafka_broker.bootstrap_servers, topic, expected=len(ok))
    topic_ids = {json.loads(r.value)["event_id"] for r in on_topic}

    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it
    assert process.returncode == -signal.SIGTERM
    log = await asyncio.to_thread((tmp_path / f"app-{api_port}.log").read_text)
    assert "Application shutdown complete" in log
    assert "publisher replicated stopped" in log
    assert exit_s < 20
    assert len(ok) >= 20
    assert set(ok) <= topic_ids  # every 202 is on the topic
    # every 503 names a record that is kept for replay
    assert {r.json()["record_id"] for r in refused} <= {k.id for k in kept}
    assert all(k.status is Status.PENDING for k in kept)
    # the rest were refused at the door (connection closed): the client knows they failed
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    assert len(ok) + len(refused) == len(responses)
    assert all(isinstance(a, (httpx.Response, httpx.TransportError)) for a in answers)


async def _some(answers: list[httpx.Response | Exception], count: int) -> bool:
    return len(answers) >= count
