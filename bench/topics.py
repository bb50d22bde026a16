"""Topics of a bench phase: created up front, counted after every contender's turn (records
on the topic against the 2xx answers), and read back for the contract check."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from bench.harness import create_topics

__all__ = ["Record", "create", "end_offset", "last_record"]

TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    offset: int


async def _create_and_wait(bootstrap: str, names: Sequence[str], replicas: int) -> None:
    await create_topics(bootstrap, names, replicas)
    consumer = await _consumer(bootstrap)
    try:
        async with asyncio.timeout(TIMEOUT_S * 2):
            while True:
                await consumer._client.force_metadata_update()
                cluster = consumer._client.cluster
                waiting = [
                    name
                    for name in names
                    if cluster.leader_for_partition(TopicPartition(name, 0)) in (None, -1)
                ]
                if not waiting:
                    return
                await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def create(bootstrap: str, names: Sequence[str], replicas: int) -> None:
    """Create the topics (1 partition each), then wait until each has a leader: a contender
    started before would spend its first seconds, or its first backoff, waiting for one."""
    asyncio.run(_create_and_wait(bootstrap, names, replicas))


async def _consumer(bootstrap: str) -> Any:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    return consumer


async def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = await _consumer(bootstrap)
    try:
        partition = TopicPartition(topic, 0)
        async with asyncio.timeout(TIMEOUT_S):
            ends: dict[Any, int] = await consumer.end_offsets([partition])
        return ends[partition]
    finally:
        await consumer.stop()


def end_offset(bootstrap: str, topic: str) -> int:
    """The next offset of the topic's one partition: the records written to it so far."""
    return asyncio.run(_end_offset(bootstrap, topic))


async def _last_record(bootstrap: str, topic: str) -> Record | None:
    consumer = await _consumer(bootstrap)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        async with asyncio.timeout(TIMEOUT_S):
            end = (await consumer.end_offsets([partition]))[partition]
            if end == 0:
                return None
            consumer.seek(partition, end - 1)
            while True:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                for message in batch.get(partition, []):
                    return Record(
                        message.key, message.value, tuple(message.headers), message.offset
                    )
    finally:
        await consumer.stop()


def last_record(bootstrap: str, topic: str) -> Record | None:
    """The latest record on the topic's one partition (None when it is empty)."""
    return asyncio.run(_last_record(bootstrap, topic))
