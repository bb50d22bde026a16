"""What the feature does, independent of HTTP: publish the event, return what it gave."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import VerificationSettings
from app.verification.events import VerificationEmailRequested
from kafka_events import KafkaEvents, QueuedReceipt, Reply, context
from kafka_events.receipts import DeliveryReceipt


@dataclass(frozen=True, slots=True)
class Published:
    """What publishing a verification-email event gave: its receipt, and the reply if awaited."""

    receipt: DeliveryReceipt | QueuedReceipt
    reply: Reply | None = None


async def request_verification_email(
    *,
    events: KafkaEvents,
    settings: VerificationSettings,
    email: str,
    redirect_url: str,
    await_reply: bool = False,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> Published:
    """Publish `VerificationEmailRequested` to the worker's topic under the feature's policy.

    `emit` (the default): returns once the broker acknowledged it. `await_reply`: also waits,
    under `REPLY__TIMEOUT_MS`, for the worker's answer (request-reply). The event carries
    `correlation_id` (the request's) to Kafka, and every line logged meanwhile its event id.
    `event_id`: the event's id (an Idempotency-Key's, see `kafka_events.idempotency`); none:
    a new one.

    Raises:
        PublishError (recorded, see `kafka_events.delivery`), RepliesUnavailable, ReplyTimeout.
    """
    event = (
        VerificationEmailRequested(email=email, redirect_url=redirect_url, event_id=event_id)
        if event_id is not None
        else VerificationEmailRequested(email=email, redirect_url=redirect_url)
    )
    with context.bound(event_id=event.event_id):
        if await_reply:
            receipt, reply = await events.request(
                event, topic=settings.topic, policy=settings.policy, correlation_id=correlation_id
            )
            return Published(receipt, reply)
        receipt = await events.emit(
            event, topic=settings.topic, policy=settings.policy, correlation_id=correlation_id
        )
        return Published(receipt)
