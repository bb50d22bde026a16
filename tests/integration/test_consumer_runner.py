"""The library's consumer runner with a handler of its own (not the email worker's), against a
real broker: every record handled and committed in order, a failure handled again, a dead
letter with its reasons, and a reply to a request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from devtools.kafka import KafkaCluster
from kafka_events import KafkaConfig
from kafka_events.consumer import (
    ConsumerConfig,
    ConsumerMetrics,
    ConsumerRunner,
    Outcome,
    RetryLater,
    Tools,
)
from tests.helpers.kafka import create_topic, read_all
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.kafka


class Handler:
    """Counts what it sees; `poison` is dead-lettered, `flaky` fails once, the rest is done."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, record: Any, tools: Tools) -> Outcome:
        value: bytes = record.value
        self.seen.append(value)
        if value == b"flaky" and self.seen.count(b"flaky") == 1:
            raise RetryLater("the database blinked")
        if value == b"poison":
            return Outcome(
                "failed", None, 1, error_type="Poison", detail="not an order", dead_letter=True
            )
        return Outcome("done", value.decode())


async def test_a_handler_sees_every_record_once_in_order_with_retries_dead_letters_and_replies(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source = await create_topic(bootstrap, topic_name, partitions=1)
    dead = await create_topic(bootstrap, f"{topic_name}.dlq", partitions=1)
    replies = await create_topic(bootstrap, f"{topic_name}.replies", partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for value in (b"first", b"flaky", b"poison"):
        await producer.send_and_wait(source, value)
    await producer.send_and_wait(
        source,
        b"asks",
        headers=[("kafka_replyTopic", replies.encode()), ("kafka_correlationId", b"c-9")],
    )
    await producer.stop()
    handler = Handler()
    registry = CollectorRegistry()
    runner = ConsumerRunner(
        KafkaConfig(bootstrap_servers=bootstrap),
        ConsumerConfig(
            topic=source,
            group_id=f"g-{topic_name}",
            dead_letter_topic=dead,
            backoff_initial_ms=50,
            backoff_max_ms=100,
        ),
        handler,
        metrics=ConsumerMetrics(registry),
    )
    await runner.start()
    try:

        async def finished() -> bool:
            return handler.seen.count(b"asks") == 1

        await eventually(finished, timeout_s=30)
        [dead_letter] = await read_all(bootstrap, dead, expected=1)
        [reply] = await read_all(bootstrap, replies, expected=1)
    finally:
        await runner.stop()

    assert handler.seen == [b"first", b"flaky", b"flaky", b"poison", b"asks"]
    headers = dict(dead_letter.headers)
    assert dead_letter.value == b"poison"
    assert (headers["dlq_error_type"], headers["dlq_error"]) == (b"Poison", b"not an order")
    assert headers["dlq_source_offset"] == b"2"
    assert reply.key == b"c-9"
    assert json.loads(reply.value)["status"] == "done"
    done = registry.get_sample_value(
        "kafka_events_worker_records_total", {"topic": source, "outcome": "done"}
    )
    retried = registry.get_sample_value("kafka_events_worker_retries_total", {"topic": source})
    assert (done, retried) == (3.0, 1.0)
