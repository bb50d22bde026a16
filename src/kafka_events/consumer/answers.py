"""What a consumer runner writes about a record: its dead letter, and its reply.

A dead letter is produced, acknowledged by every in-sync replica, before the record is
committed (a failure leaves the record uncommitted: `RetryLater`). A reply is produced once;
if that fails it is logged as lost: the requester's own timeout covers it.

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from kafka_events import context
from kafka_events import tracing as kafka_tracing
from kafka_events.consumer import records
from kafka_events.consumer.handling import ConsumerConfig, Outcome, RetryLater

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)


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
            RetryLater: not acknowledged in time (it may still be written).
        """
        try:
            async with asyncio.timeout(self.config.produce_timeout_ms / 1000):
                await self._producer.send_and_wait(
                    topic, value=value, key=key, headers=headers, partition=partition
                )
        except (KafkaError, TimeoutError) as error:
            raise RetryLater(f"producing to {topic}: {error!r}") from error

    async def dead_letter(
        self, record: Any, headers: list[tuple[str, bytes]], outcome: Outcome
    ) -> None:
        topic = self.config.dead_letter_topic
        if topic is None:
            raise RuntimeError("the handler asked for a dead letter, but no topic is configured")
        await self._produce(
            topic,
            key=record.key,
            value=record.value,
            headers=records.dead_letter_headers(
                headers,
                error_type=outcome.error_type or "HandlerFailed",
                error=outcome.detail or "",
                attempts=outcome.attempts,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            ),
        )

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
        except (RetryLater, KafkaError, TimeoutError) as error:
            logger.error("event %s: reply to %s lost: %s", outcome.event_id, address.topic, error)
