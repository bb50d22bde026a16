"""Poison records against the library's consumer runner and a real broker: a record that
cannot be decoded, one whose handler raises, and one whose dead letter is too large for Kafka.
None of them stops its partition; each leaves a dead letter and is counted."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from devtools.kafka import KafkaCluster
from kafka_events import KafkaConfig
from kafka_events.consumer import ConsumerConfig, ConsumerMetrics, ConsumerRunner, Outcome, Tools
from tests.helpers.kafka import create_topic, read_all, send_raw_header_key
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.kafka

# fits the topic (1.5 MB), but not the 1 MiB max_request_size once dlq_* headers are added
BIG = 1_048_400


class Handler:
    """`crash` raises an unexpected error, `big` is dead-lettered, the rest is done."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, record: Any, tools: Tools) -> Outcome:
        value: bytes = record.value or b""
        self.seen.append(value[:16])
        if value == b"crash":
            raise IndexError("pop from empty list")  # a bug in the handler
        if len(value) >= BIG:
            return Outcome("failed", None, 1, error_type="TooBig", detail="", dead_letter=True)
        return Outcome("done", None)


async def _start_runner(
    bootstrap: str, source: str, dead: str, handler: Handler, registry: CollectorRegistry
) -> ConsumerRunner:
    runner = ConsumerRunner(
        KafkaConfig(bootstrap_servers=bootstrap),
        ConsumerConfig(
            topic=source,
            group_id=f"g-{source}",
            dead_letter_topic=dead,
            backoff_initial_ms=50,
            backoff_max_ms=100,
        ),
        handler,
        metrics=ConsumerMetrics(registry),
    )
    await runner.start()
    return runner


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(tp)
        return committed
    finally:
        await consumer.stop()


async def test_no_poison_record_stops_the_partition_and_each_leaves_a_dead_letter(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    big_topic = {"max.message.bytes": str(1_500_000)}
    source = await create_topic(bootstrap, topic_name, partitions=1, config=big_topic)
    dead = await create_topic(bootstrap, f"{topic_name}.dlq", partitions=1, config=big_topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_100_000)
    await producer.start()
    try:
        await producer.send_and_wait(source, b"first", partition=0)
        unreadable = await send_raw_header_key(bootstrap, source, b"\xff\xfe")
        await producer.send_and_wait(source, b"crash", partition=0)
        await producer.send_and_wait(source, b"b" * BIG, partition=0)
        await producer.send_and_wait(source, b"last", partition=0)
    finally:
        await producer.stop()
    handler = Handler()
    registry = CollectorRegistry()
    runner = await _start_runner(bootstrap, source, dead, handler, registry)
    try:

        async def finished() -> bool:
            return b"last" in handler.seen

        await eventually(finished, timeout_s=60)
        letters = await read_all(bootstrap, dead, expected=3)
    finally:
        await runner.stop()

    # every readable record was handled, in order; the crashing one three times
    assert handler.seen == [b"first", b"crash", b"crash", b"crash", b"b" * 16, b"last"]
    by_offset = {int(dict(r.headers)["dlq_source_offset"]): r for r in letters}
    assert sorted(by_offset) == [unreadable, unreadable + 1, unreadable + 2]
    skipped = dict(by_offset[unreadable].headers)
    assert skipped["dlq_error_type"] == b"UnreadableRecord"
    assert skipped["dlq_reference"] == b"true"
    assert by_offset[unreadable].value == b""
    crashed = dict(by_offset[unreadable + 1].headers)
    assert (crashed["dlq_error_type"], crashed["dlq_attempts"]) == (b"IndexError", b"3")
    assert by_offset[unreadable + 1].value == b"crash"
    too_big = by_offset[unreadable + 2]
    assert dict(too_big.headers)["dlq_truncated"] == b"true"
    assert dict(too_big.headers)["dlq_original_size"] == str(BIG).encode()
    assert too_big.value == b"b" * (64 * 1024)

    def poison(kind: str) -> float | None:
        return registry.get_sample_value(
            "kafka_events_worker_poison_total", {"topic": source, "kind": kind}
        )

    assert (poison("unreadable"), poison("handler_error"), poison("dead_letter_truncated")) == (
        1.0,
        1.0,
        1.0,
    )
    tp = TopicPartition(source, 0)
    assert await _committed(bootstrap, f"g-{source}", tp) == unreadable + 4  # past "last"
