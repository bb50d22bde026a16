"""Delivery by policy: publish now, or record durably, and never lose what was accepted.

`DeliveryService.emit(message, policy=...)`:
- direct policies: publish under the policy (deadline, retries). If that finally fails with
  anything but a record too large or an unencodable event, the message is recorded in the
  store *before* the error propagates; the error then carries `record_id`, and the relay
  replays the record once brokers answer.
- outbox policies: the message is recorded first and `emit` returns a `QueuedReceipt` at once;
  the relay publishes it and stores its receipt (`GET /events/{event_id}`).

If the store itself cannot record a failed message, the error propagates with
`record_id=None` and the failure is logged: the caller is told the message was not kept.

With tracing on, a message is stored carrying the current trace context (the request's), so
the relay's later publish of it joins the request's trace (`kafka_events.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kafka_events import errors
from kafka_events.messages import OutgoingMessage
from kafka_events.metrics import Metrics
from kafka_events.producer.publish import KafkaPublisher
from kafka_events.receipts import DeliveryReceipt, QueuedReceipt
from kafka_events.store.base import MessageStore, Origin
from kafka_events.tracing import with_current_context

logger = logging.getLogger(__name__)

STORE_TIMEOUT_S = 10.0


class DeliveryService:
    """Publishes by policy; records what fails; queues what goes through the outbox."""

    def __init__(
        self,
        publishers: Mapping[str, KafkaPublisher],
        store: MessageStore,
        *,
        on_recorded: Callable[[], None] = lambda: None,
        on_in_flight: Callable[[str, asyncio.Future[Any]], None] = lambda _id, _future: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._publishers = publishers
        self._store = store
        self._metrics = metrics or Metrics(None)
        self._on_recorded = on_recorded
        self._on_in_flight = on_in_flight

    def publisher(self, policy: str) -> KafkaPublisher:
        return self._publishers[policy]

    async def emit(
        self, message: OutgoingMessage, *, policy: str
    ) -> DeliveryReceipt | QueuedReceipt:
        """Deliver `message` under `policy`.

        Returns:
            The broker's receipt, or a `QueuedReceipt` for an outbox policy.

        Raises:
            PublishError: the message was not delivered; `record_id` says where it is kept
                (None when it is not: too large, unencodable, or the store failed too).
        """
        publisher = self._publishers[policy]
        if publisher.outbox:
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    stored = await self._store.record(
                        _kept(publisher, message), origin=Origin.OUTBOX, policy=policy
                    )
            except (errors.StoreError, OSError, TimeoutError):
                logger.exception("event %s: the outbox could not store it", message.event_id)
                raise errors.StoreUnavailable(
                    "the outbox could not store the event; nothing was sent",
                    event_id=message.event_id,
                ) from None
            self._metrics.recorded.labels(message.topic, policy, Origin.OUTBOX.value).inc()
            self._on_recorded()
            logger.debug("event %s: queued in the outbox as %s", message.event_id, stored.id)
            return QueuedReceipt(
                event_id=message.event_id, record_id=stored.id, topic=message.topic, policy=policy
            )
        try:
            receipt = await publisher.publish(message)
        except errors.PublishError as error:
            if isinstance(error, (errors.RecordTooLarge, errors.EncodingError)):
                raise
            record_id = await self._record_failure(_kept(publisher, message), policy, error)
            if record_id is not None and error.in_flight is not None:
                # a broker may still write it: the relay waits for that outcome
                self._on_in_flight(record_id, error.in_flight)
            raise error.replace(record_id=record_id) from error.__cause__
        logger.debug(
            "event %s: published to %s[%s]@%s (%d attempt(s), %.1f ms)",
            message.event_id,
            message.topic,
            receipt.partition,
            receipt.offset,
            receipt.attempts,
            receipt.elapsed_ms,
        )
        return receipt

    async def _record_failure(
        self, message: OutgoingMessage, policy: str, error: errors.PublishError
    ) -> str | None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                stored = await self._store.record(
                    message,
                    origin=Origin.FAILED,
                    policy=policy,
                    attempts=error.attempts,
                    error_type=error.cause,
                    error=str(error),
                )
        except (errors.StoreError, OSError, TimeoutError):
            self._metrics.record_failures.labels(message.topic, policy).inc()
            logger.critical(
                "event %s: publish failed (%s) and the store could not record it",
                message.event_id,
                error.cause,
                exc_info=True,
            )
            return None
        logger.warning(
            "event %s: publish failed after %d attempt(s) (%s); recorded as %s",
            message.event_id,
            error.attempts,
            error.cause,
            stored.id,
        )
        self._metrics.recorded.labels(message.topic, policy, Origin.FAILED.value).inc()
        self._on_recorded()
        return stored.id


def _kept(publisher: KafkaPublisher, message: OutgoingMessage) -> OutgoingMessage:
    """`message` as the store keeps it: with the current trace context when tracing is on."""
    return with_current_context(message) if publisher.traced else message
