"""POST /verification-emails against a real broker: what the receipt says is what Kafka holds."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from app.config import PolicyName
from devtools.kafka import KafkaCluster
from kafka_events.producer import lifecycle as publisher_module
from tests.helpers.kafka import read_all, read_at
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port, closed_ports, eventually

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify?t=1"}


async def test_receipt_matches_what_an_independent_consumer_reads(
    client: httpx.AsyncClient, kafka_broker: KafkaCluster, topic: str
) -> None:
    response = await client.post("/verification-emails", json=BODY)

    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["topic"] == topic
    assert receipt["confirmed"] is True
    assert receipt["acks"] == "all"
    assert receipt["policy"] == "replicated"
    assert receipt["idempotent"] is True
    assert receipt["attempts"] == 1
    assert receipt["timestamp_type"] == "CreateTime"
    assert receipt["log_start_offset"] == 0
    record = await read_at(
        kafka_broker.bootstrap_servers, topic, receipt["partition"], receipt["offset"]
    )
    assert record.key == b"ada@example.com"
    assert record.timestamp == receipt["timestamp"]
    value = json.loads(record.value)
    assert value["event_id"] == receipt["event_id"]
    assert value["event_type"] == "verification_email.requested"
    assert value["email"] == BODY["email"]
    assert value["redirect_url"] == BODY["redirect_url"]
    headers = dict(record.headers)
    assert headers["event_id"] == receipt["event_id"].encode()
    assert headers["event_type"] == b"verification_email.requested"


async def test_one_users_messages_share_a_partition_in_order(
    client: httpx.AsyncClient, topic: str
) -> None:
    receipts = [(await client.post("/verification-emails", json=BODY)).json() for _ in range(5)]

    assert len({r["partition"] for r in receipts}) == 1
    offsets = [r["offset"] for r in receipts]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 5


async def test_one_producer_serves_many_concurrent_requests(
    kafka_broker: KafkaCluster, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[Any] = []

    class CountingProducer(AIOKafkaProducer):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            created.append(self)

    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", CountingProducer)
    async with running_app(make_settings(kafka_broker.bootstrap_servers, topic)) as running:
        client = running.client
        responses = await asyncio.gather(
            *(
                client.post(
                    "/verification-emails",
                    json={"email": f"user{i}@example.com", "redirect_url": "https://x.example/"},
                )
                for i in range(100)
            )
        )
        replicated = next(p for p in created if p.client._client_id.endswith("-replicated"))
        connections = len(replicated.client._conns)

    assert [r.status_code for r in responses] == [202] * 100
    assert len(created) == 3  # one per delivery policy, however many requests
    # one connection to the broker (plus possibly the bootstrap one), however many requests
    assert connections <= 2
    assert len({r.json()["event_id"] for r in responses}) == 100


@pytest.mark.parametrize(
    ("policy", "overrides", "acks", "idempotent", "confirmed"),
    [
        (PolicyName.FIRE_AND_FORGET, {}, "0", False, False),
        (PolicyName.LEADER, {}, "1", False, True),
        (PolicyName.LEADER, {"acks": "all"}, "all", False, True),
        (PolicyName.REPLICATED, {}, "all", True, True),
    ],
)
async def test_each_policy_reports_what_the_broker_confirmed(
    kafka_broker: KafkaCluster,
    topic: str,
    policy: PolicyName,
    overrides: dict[str, Any],
    acks: str,
    idempotent: bool,
    confirmed: bool,
) -> None:
    settings = make_settings(kafka_broker.bootstrap_servers, topic, policy=policy, **overrides)
    async with running_app(settings) as running:
        client = running.client
        response = await client.post("/verification-emails", json=BODY)

    assert response.status_code == 202
    receipt = response.json()
    assert receipt["policy"] == policy.value
    assert receipt["acks"] == acks
    assert receipt["idempotent"] is idempotent
    assert receipt["confirmed"] is confirmed
    if confirmed:
        assert receipt["offset"] == 0
        assert receipt["partition"] in (0, 1, 2)
    else:  # acks=0: no offset is invented
        assert receipt["offset"] is None
        assert receipt["partition"] is None
        assert receipt["timestamp"] is None
        records = await read_all(kafka_broker.bootstrap_servers, topic, expected=1)
        assert json.loads(records[0].value)["event_id"] == receipt["event_id"]


async def test_shutdown_flushes_messages_published_just_before_it(
    kafka_broker: KafkaCluster, topic: str
) -> None:
    # A long linger keeps the messages in the producer's buffer until shutdown flushes them.
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, linger_ms=2000, delivery_timeout_ms=20000
    )
    async with running_app(settings) as running:
        client = running.client
        publisher = running.state.publishers[PolicyName.REPLICATED]
        tasks = [
            asyncio.create_task(
                client.post(
                    "/verification-emails",
                    json={"email": f"late{i}@example.com", "redirect_url": "https://x.example/"},
                )
            )
            for i in range(20)
        ]

        async def all_buffered() -> bool:
            return publisher.awaiting_acknowledgement == 20

        await eventually(all_buffered, timeout_s=10, interval_s=0)
        assert all(not t.done() for t in tasks)
    # the lifespan has ended: the publisher is stopped and every request has its answer
    responses = [t.result() for t in tasks]
    assert [r.status_code for r in responses] == [202] * 20
    records = await read_all(kafka_broker.bootstrap_servers, topic, expected=20)
    assert {json.loads(r.value)["event_id"] for r in records} == {
        r.json()["event_id"] for r in responses
    }


async def test_transactional_producer_publishes_committed_messages(
    kafka_broker: KafkaCluster, topic: str
) -> None:
    settings = make_settings(kafka_broker.bootstrap_servers, topic, transactional_id=f"tx-{topic}")
    async with running_app(settings) as running:
        client = running.client
        responses = [await client.post("/verification-emails", json=BODY) for _ in range(3)]

    assert [r.status_code for r in responses] == [202] * 3
    records = await read_all(
        kafka_broker.bootstrap_servers, topic, expected=3, isolation_level="read_committed"
    )
    assert [json.loads(r.value)["event_id"] for r in records] == [
        r.json()["event_id"] for r in responses
    ]


async def test_ready_when_the_broker_answers(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")

    async def ready_now() -> bool:  # once the reply reader reads too (it starts in background)
        return (await client.get("/health/ready")).status_code == 200

    await eventually(ready_now, timeout_s=30, interval_s=0.1)
    ready = await client.get("/health/ready")

    assert live.status_code == 200
    assert live.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_without_a_broker_the_app_starts_not_ready_and_answers_503_in_time() -> None:
    port = closed_port()
    settings = make_settings(
        f"127.0.0.1:{port}", "t-no-broker", delivery_timeout_ms=1500, connect_timeout_ms=1000
    )
    async with running_app(settings) as running:
        client = running.client
        ready = await client.get("/health/ready")
        started = time.monotonic()
        response = await client.post("/verification-emails", json=BODY)
        elapsed = time.monotonic() - started

    assert ready.status_code == 503
    assert ready.json()["error"] == "not_ready"
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "broker_unavailable"
    assert body["delivery"] == "not_sent"
    assert len(body["event_id"]) == 36
    assert body["record_id"] is not None  # kept for replay
    assert response.headers["retry-after"] == "5"
    # the deadline bounds the wait (the slack covers scheduling, not a performance claim)
    assert 1.4 < elapsed < 3.0
    assert str(port) not in response.text
    assert "127.0.0.1" not in response.text
    assert "Traceback" not in response.text


async def test_the_app_connects_once_a_broker_appears_after_start_up(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = closed_ports(2)  # a broker starts there later: its port and its controller's
    settings = make_settings(
        f"127.0.0.1:{port}",
        "t-late-broker",
        delivery_timeout_ms=2000,
        connect_timeout_ms=1000,
        reconnect_backoff_max_ms=500,
    )
    async with running_app(settings) as running:
        client = running.client
        assert (await client.get("/health/ready")).status_code == 503
        cluster = KafkaCluster(tmp_path_factory.mktemp("late"), nodes=1, broker_port=port)
        await asyncio.to_thread(cluster.start)
        try:

            async def ready() -> bool:
                return (await client.get("/health/ready")).status_code == 200

            await eventually(ready, timeout_s=30, interval_s=0.2)
            response = await client.post("/verification-emails", json=BODY)
        finally:
            await asyncio.to_thread(cluster.stop)

    assert response.status_code == 202
    assert response.json()["offset"] == 0
