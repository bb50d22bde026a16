"""What a consumer runner writes about a record: its dead letter, and its reply.

A dead letter is produced, acknowledged by every in-sync replica, before the record is
committed (a failure leaves the record uncommitted: `RetryLater`). A reply is produced once;
if that fails it is logged as lost: the requester's own timeout covers it.

A dead letter always fits: when the original record plus its `dlq_*` headers is over the
producer's `max_request_size` (or the dead-letter topic's `max.message.bytes`), the copy is
*truncated* (its value cut to `TRUNCATED_BYTES`, with `dlq_truncated` and
`dlq_original_size`); if even that is refused, it is a *reference* (no key, an empty value, no
original headers: only the `dlq_*` ones, which say where the original is). A record that could
not be decoded at all is dead-lettered as a reference too. Refusing a record for its size is
never a passing failure: retrying it would hold its partition forever.

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from kafka_events import context
from kafka_events import tracing as kafka_tracing
from kafka_events.consumer import records
from kafka_events.consumer.fetching import Unreadable
from kafka_events.consumer.handling import ConsumerConfig, Outcome, RetryLater

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

# a truncated dead letter keeps this much of the original value
TRUNCATED_BYTES = 64 * 1024
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class TooLarge(Exception):
    """Kafka refused the record for its size (the producer's or the topic's limit)."""


class Answers:
    """Dead letters and replies, through the runner's idempotent acks=all producer."""

    def __init__(
        self, producer: Any, config: ConsumerConfig, tracer: Callable[[], Tracer | None]
    ) -> None:
        self._producer = producer
        self.config = config
        self._tracer = tracer

    async def _produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> None:
        """Produce one record and wait for every in-sync replica, within `produce_timeout_ms`.

        Raises:
            TooLarge: refused for its size (sending it again would be refused again).
            RetryLater: not acknowledged in time (it may still be written).
        """
        try:
            async with asyncio.timeout(self.config.produce_timeout_ms / 1000):
                await self._producer.send_and_wait(
                    topic, value=value, key=key, headers=headers, partition=partition
                )
        except _TOO_LARGE as error:
            raise TooLarge(type(error).__name__) from error
        except (KafkaError, TimeoutError) as error:
            raise RetryLater(f"producing to {topic}: {error!r}") from error

    def _dead_letter_topic(self) -> str:
        topic = self.config.dead_letter_topic
        if topic is None:
            raise RuntimeError("the handler asked for a dead letter, but no topic is configured")
        return topic

    async def dead_letter(
        self, record: Any, headers: list[tuple[str, bytes]], outcome: Outcome
    ) -> str:
        """Dead-letter `record`; returns what was written: "copy", "truncated" or "reference".

        Raises:
            RetryLater: Kafka did not acknowledge it in time, or the dead-letter topic refuses
                even a reference copy (a misconfigured topic: the record waits, uncommitted).
        """
        topic = self._dead_letter_topic()

        def added(*extra: tuple[str, bytes], original: list[tuple[str, bytes]]) -> list[Any]:
            return records.dead_letter_headers(
                original,
                error_type=outcome.error_type or "HandlerFailed",
                error=outcome.detail or "",
                attempts=outcome.attempts,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            ) + list(extra)

        value: bytes | None = record.value
        size = str(len(value) if value is not None else 0).encode()
        try:
            await self._produce(topic, key=record.key, value=value, headers=added(original=headers))
            return "copy"
        except TooLarge:
            pass
        truncated = ("dlq_truncated", b"true"), ("dlq_original_size", size)
        try:
            await self._produce(
                topic,
                key=record.key[:TRUNCATED_BYTES] if record.key is not None else None,
                value=value[:TRUNCATED_BYTES] if value is not None else None,
                headers=added(*truncated, original=_small(headers)),
            )
            kind = "truncated"
        except TooLarge:
            reference = added(("dlq_reference", b"true"), ("dlq_original_size", size), original=[])
            try:
                await self._produce(topic, key=None, value=b"", headers=reference)
            except TooLarge as error:  # no trace can be left: the record waits for one
                raise RetryLater(
                    f"{topic} refuses even a reference copy ({error}): check its max.message.bytes"
                ) from error
            kind = "reference"
        logger.warning(
            "%s[%d]@%d: its dead letter is a %s copy (the original is too large to copy)",
            record.topic,
            record.partition,
            record.offset,
            kind,
        )
        return kind

    async def unreadable(self, skipped: Unreadable) -> None:
        """A reference dead letter for a record that could not be decoded (see `fetching`).

        Raises:
            RetryLater: Kafka did not acknowledge it in time.
        """
        headers = records.dead_letter_headers(
            [],
            error_type="UnreadableRecord",
            error=f"the record could not be decoded ({skipped.error}); it was skipped, unhandled",
            attempts=0,
            topic=skipped.topic,
            partition=skipped.partition,
            offset=skipped.offset,
        )
        headers.append(("dlq_reference", b"true"))
        try:
            await self._produce(self._dead_letter_topic(), key=None, value=b"", headers=headers)
        except TooLarge as error:  # a few short headers: cannot be
            raise RetryLater(f"a reference dead letter was refused: {error}") from error

    async def reply(self, address: records.ReplyAddress | None, outcome: Outcome) -> None:
        if address is None:
            return
        value = records.reply_value(
            event_id=outcome.event_id,
            status=outcome.status,
            detail=outcome.error_type,
            handled_at=datetime.now(UTC),
        )
        try:
            if address.partition is not None:
                async with asyncio.timeout(self.config.produce_timeout_ms / 1000):
                    partitions = await self._producer.partitions_for(address.topic)
                if address.partition not in partitions:
                    # aiokafka would fail an assertion; a requester's mistake must not stop us
                    logger.warning(
                        "event %s: no reply: %s has no partition %d",
                        outcome.event_id,
                        address.topic,
                        address.partition,
                    )
                    return
            with kafka_tracing.producing(
                self._tracer(), address.topic, message_id=outcome.event_id
            ) as span:
                headers = records.reply_headers(
                    address, outcome.event_id, context.correlation_id.get()
                )
                await self._produce(
                    address.topic,
                    key=address.correlation_id,
                    value=value,
                    headers=list(kafka_tracing.with_context(headers, span)),
                    partition=address.partition,
                )
        except (RetryLater, TooLarge, KafkaError, TimeoutError) as error:
            logger.error("event %s: reply to %s lost: %s", outcome.event_id, address.topic, error)


def _small(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The original headers of a truncated copy: those that are short (ids, types)."""
    return [(name, value) for name, value in headers if len(name) + len(value) <= 1024]
