"""Kafka for tests: make a topic, and read back exactly what the broker stored with a
consumer of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]


async def read_at(
    bootstrap_servers: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    timeout_s: float = 15.0,
    isolation_level: str = "read_uncommitted",
    **security: Any,
) -> Any:
    """The record at `topic[partition]@offset`, read by a consumer of its own (no group).

    `security`: aiokafka's security arguments, for a secured listener.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        **security,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        async with asyncio.timeout(timeout_s):
            return await consumer.getone(tp)
    finally:
        await consumer.stop()


async def read_all(
    bootstrap_servers: str,
    topic: str,
    *,
    expected: int,
    timeout_s: float = 20.0,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record of `topic` from the beginning, once `expected` have been read.

    Raises TimeoutError if fewer than `expected` arrive in time.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def create_topic(
    bootstrap_servers: str,
    name: str,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(config or {}),
                )
            ]
        )
    finally:
        await admin.close()
    return name


class _RawHeaderKey(str):
    """A header key whose encoding is the given bytes, UTF-8 or not (see `send_raw_header_key`)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawHeaderKey:
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


async def send_raw_header_key(
    bootstrap_servers: str,
    topic: str,
    header_key: bytes,
    *,
    value: bytes | None = b"{}",
    partition: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Write one record with a header key of any bytes (the protocol allows it; aiokafka's
    own producer only writes UTF-8 keys), as a hostile or a non-Python producer would.

    Builds the batch with aiokafka's pure-Python record builder, which encodes a key by
    calling its `encode()`. Returns the record's offset.
    """
    from aiokafka.producer import message_accumulator  # type: ignore[import-untyped]
    from aiokafka.producer import producer as producer_module
    from aiokafka.record import default_records  # type: ignore[import-untyped]

    builder = message_accumulator.DefaultRecordBatchBuilder
    python_builder = default_records._DefaultRecordBatchBuilderPy
    message_accumulator.DefaultRecordBatchBuilder = python_builder
    producer_module.DefaultRecordBatchBuilder = python_builder
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=False)
    try:
        await producer.start()
        metadata = await producer.send_and_wait(
            topic,
            value=value,
            partition=partition,
            headers=[*(headers or []), (_RawHeaderKey(header_key), b"x")],
        )
    finally:
        await producer.stop()
        message_accumulator.DefaultRecordBatchBuilder = builder
        producer_module.DefaultRecordBatchBuilder = builder
    offset: int = metadata.offset
    return offset


async def record_count(bootstrap: str, topic: str) -> int:
    """How many records `topic` holds (its partitions' end offsets, summed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # the whole cluster's metadata (`topics()` fetches it, but keeps it from the consumer)
        metadata = await consumer._client.fetch_all_metadata()
        numbers = metadata.partitions_for_topic(topic)
        if not numbers:
            raise LookupError(f"no topic {topic}")
        partitions = [TopicPartition(topic, p) for p in numbers]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends.values())
