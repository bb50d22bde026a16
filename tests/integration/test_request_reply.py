"""Request-reply (`POST /verification-emails?wait_for=delivery`) against a real broker.

The other side is a minimal responder that follows the worker's reply contract (headers
`kafka_replyTopic` and `kafka_correlationId` in, a JSON reply with the same correlation id
out), so these tests are about the API's half: routing replies, deadlines, isolation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic, read_at, send_raw_header_key
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


@asynccontextmanager
async def responder(
    bootstrap: str,
    topic: str,
    *,
    status: str = "sent",
    from_beginning: bool = False,
    value: bytes | None = None,
) -> AsyncIterator[list[str]]:
    """Answers every request on `topic` as the worker would (or with `value` as it is);
    yields the event ids answered."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    answered: list[str] = []

    async def answer() -> None:
        partitions = [TopicPartition(topic, p) for p in range(3)]  # create_topic's default
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        ready.set()
        async for record in consumer:
            headers = dict(record.headers)
            if "kafka_replyTopic" not in headers:
                continue
            event_id = headers["event_id"].decode()
            reply = {
                "event_id": event_id,
                "status": status,
                "detail": None,
                "handled_at": datetime.now(UTC).isoformat(),
            }
            correlation = headers["kafka_correlationId"]
            answered.append(event_id)  # before replying: the requester may finish at once
            await producer.send_and_wait(
                headers["kafka_replyTopic"].decode(),
                json.dumps(reply).encode() if value is None else value,
                key=correlation,
                headers=[("kafka_correlationId", correlation), ("event_id", event_id.encode())],
            )

    ready = asyncio.Event()
    task = asyncio.create_task(answer())
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        yield answered
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await consumer.stop()


def settings_for(bootstrap: str, topic: str, reply_topic: str, timeout_ms: int = 10000) -> object:
    settings = make_settings(bootstrap, topic)
    return settings.model_copy(
        update={
            "reply": settings.reply.model_copy(
                update={"topic": reply_topic, "timeout_ms": timeout_ms}
            )
        }
    )


async def wait_replies_ready(running: object) -> None:
    async def ready() -> bool:
        return bool(running.state.replies.ready)  # type: ignore[attr-defined]

    await eventually(ready, timeout_s=30, interval_s=0.05)


async def test_wait_for_delivery_answers_200_with_the_workers_reply_and_the_receipt(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    topic = await create_topic(kafka_broker.bootstrap_servers, topic_name)
    settings = settings_for(kafka_broker.bootstrap_servers, topic, f"{topic}.reply")
    async with (
        running_app(settings) as running,  # type: ignore[arg-type]
        responder(kafka_broker.bootstrap_servers, topic) as answered,
    ):
        await wait_replies_ready(running)
        response = await running.client.post(
            "/verification-emails", params={"wait_for": "delivery"}, json=BODY
        )

    body = response.json()
    assert response.status_code == 200, body
    assert body["reply"]["status"] == "sent"
    assert body["reply"]["event_id"] == body["receipt"]["event_id"] == answered[0]
    request = await read_at(
        kafka_broker.bootstrap_servers,
        topic,
        body["receipt"]["partition"],
        body["receipt"]["offset"],
    )
    headers = dict(request.headers)
    assert headers["kafka_replyTopic"] == f"{topic}.reply".encode()
    assert len(headers["kafka_correlationId"]) == 32


async def test_a_reply_that_comes_too_late_gets_504_with_the_receipt_and_is_dropped_safely(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    topic = await create_topic(kafka_broker.bootstrap_servers, topic_name)
    settings = settings_for(kafka_broker.bootstrap_servers, topic, f"{topic}.reply", timeout_ms=500)
    async with running_app(settings) as running:  # type: ignore[arg-type]
        await wait_replies_ready(running)
        timed_out = await running.client.post(
            "/verification-emails", params={"wait_for": "delivery"}, json=BODY
        )
        # the worker answers now, late: the reply reaches nobody, and nothing breaks
        async with responder(kafka_broker.bootstrap_servers, topic, from_beginning=True):

            async def late_reply_dropped() -> bool:
                return bool(running.state.replies.dropped >= 1)

            await eventually(late_reply_dropped, timeout_s=20, interval_s=0.05)
            next_one = await running.client.post(
                "/verification-emails", params={"wait_for": "delivery"}, json=BODY
            )
        waiting = running.state.replies.waiting

    body = timed_out.json()
    assert timed_out.status_code == 504
    assert body["error"] == "reply_timeout"
    assert body["receipt"]["event_id"] == body["event_id"]
    assert body["receipt"]["offset"] is not None  # it was published
    assert next_one.status_code == 200
    assert waiting == 0  # no waiter left behind


async def test_two_instances_never_take_each_others_replies(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    topic = await create_topic(kafka_broker.bootstrap_servers, topic_name)
    settings = settings_for(kafka_broker.bootstrap_servers, topic, f"{topic}.reply")
    async with (
        running_app(settings) as first,  # type: ignore[arg-type]
        running_app(settings) as second,  # type: ignore[arg-type]
        responder(kafka_broker.bootstrap_servers, topic),
    ):
        await wait_replies_ready(first)
        await wait_replies_ready(second)
        requests = [
            app.client.post(
                "/verification-emails",
                params={"wait_for": "delivery"},
                json={**BODY, "email": f"user{n}@example.com"},
            )
            for n in range(10)
            for app in (first, second)
        ]
        responses = await asyncio.gather(*requests)

        async def all_seen() -> bool:
            return bool(first.state.replies.dropped + second.state.replies.dropped >= 20)

        await eventually(all_seen, timeout_s=10, interval_s=0.05)
        dropped = first.state.replies.dropped + second.state.replies.dropped

    assert [r.status_code for r in responses] == [200] * 20
    for response in responses:
        body = response.json()
        assert body["reply"]["event_id"] == body["receipt"]["event_id"]
    # each instance saw the other's ten replies and left them alone
    assert dropped == 20


async def test_no_reply_record_stops_the_reply_reader(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name)
    settings = settings_for(bootstrap, topic, f"{topic}.reply")
    async with running_app(settings) as running:  # type: ignore[arg-type]
        await wait_replies_ready(running)
        # any producer may write to the reply topic: a record aiokafka cannot decode...
        await send_raw_header_key(bootstrap, f"{topic}.reply", b"\xff\xfe", value=b"{}")
        # ...and a reply that is JSON, but not a reply's object
        async with responder(bootstrap, topic, value=b"[]"):
            malformed = await running.client.post(
                "/verification-emails", params={"wait_for": "delivery"}, json=BODY
            )
        async with responder(bootstrap, topic) as answered:
            answered_ok = await running.client.post(
                "/verification-emails", params={"wait_for": "delivery"}, json=BODY
            )
        ready = await running.client.get("/health/ready")
        registry: Any = running.state.kafka.metrics.registry

    body = malformed.json()
    assert malformed.status_code == 502, body
    assert body["error"] == "malformed_reply"
    assert body["receipt"]["offset"] is not None  # it was published: not to be resent
    assert answered_ok.status_code == 200, answered_ok.json()
    assert answered_ok.json()["reply"]["event_id"] == answered[0]
    assert ready.status_code == 200

    def unusable(reason: str) -> float | None:
        value: float | None = registry.get_sample_value(
            "kafka_events_replies_unusable_total", {"reason": reason}
        )
        return value

    assert (unusable("unreadable"), unusable("malformed")) == (1.0, 1.0)
