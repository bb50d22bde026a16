"""Fetching records so that one that cannot even be decoded never stops its reader.

aiokafka decodes every header key as UTF-8 while it iterates a fetched batch. Any producer
may write a header key that is not UTF-8 (the protocol allows any bytes), and then every
`getmany` raises `UnicodeDecodeError` at the same offset, forever: the reader's position
never moves past it. The same holds for any other error raised while a batch is decoded.

`fetch` tells such an error from Kafka's own (`KafkaError`, raised as they are: the caller
retries those) and finds the record: it asks each assigned partition alone, the one that
raises again is the culprit, and its position (aiokafka leaves it at the record it could not
decode) is the record's offset. It seeks one past it and reports it as `Unreadable`, for the
caller to leave a trace (a dead letter, a log line, a metric). Records that the other
partitions return meanwhile are handed back as usual, so nothing is dropped on the way.

The limit: aiokafka decodes a batch from its first record, so once a record of a batch cannot
be decoded, neither can the records after it *in the same producer batch* (those from the same
producer, sent within its `linger`). Each is reported, one by one, as `Unreadable`: none is
handled, none is skipped without a trace.

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record that could not be decoded: skipped, by offset."""

    topic: str
    partition: int
    offset: int
    error: str  # the decoding error's type, e.g. "UnicodeDecodeError"

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Fetched:
    records: list[Any]
    unreadable: Unreadable | None = None


async def fetch(consumer: Any, *, timeout_ms: int, max_records: int | None = None) -> Fetched:
    """The next records of `consumer`'s assigned partitions, waiting up to `timeout_ms`.

    Raises:
        KafkaError: Kafka failed (the caller pauses and asks again).
    """
    try:
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    except KafkaError:
        raise
    except Exception:  # noqa: BLE001 - any error while decoding a batch: find its record
        return await _isolate(consumer, timeout_ms=timeout_ms, max_records=max_records)
    return Fetched(_flatten(batches))


async def _isolate(consumer: Any, *, timeout_ms: int, max_records: int | None) -> Fetched:
    """Ask each assigned partition alone; the one whose fetch raises again holds the record."""
    for tp in sorted(consumer.assignment()):
        try:
            batches = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError:
            raise
        except Exception as error:  # noqa: BLE001 - this partition's record cannot be decoded
            async with asyncio.timeout(timeout_ms / 1000):  # known: it was just fetched
                offset: int = await consumer.position(tp)
            consumer.seek(tp, offset + 1)
            return Fetched([], Unreadable(tp.topic, tp.partition, offset, type(error).__name__))
        if batches:
            return Fetched(_flatten(batches))
    return Fetched([])  # it did not happen again: nothing to skip


def _flatten(batches: dict[Any, list[Any]]) -> list[Any]:
    return [record for batch in batches.values() for record in batch]
