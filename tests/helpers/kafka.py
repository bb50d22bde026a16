"""Kafka for tests: make a topic, and read back exactly what the broker stored with a
consumer of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
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
