"""The feature's domain-event listeners, and their registration on the event bus."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import VerificationSettings
from app.events import EventBus
from app.kafka.delivery import DeliveryService, QueuedReceipt
from app.kafka.receipts import DeliveryReceipt
from app.kafka.replies import Reply, RequestReply
from app.verification.events import VerificationEmailRequested


@dataclass(frozen=True, slots=True)
class Published:
    """What publishing a verification-email event gave: its receipt, and the reply if awaited."""

    receipt: DeliveryReceipt | QueuedReceipt
    reply: Reply | None = None


async def publish_verification_email(
    event: VerificationEmailRequested,
    delivery: DeliveryService,
    requests: RequestReply,
    settings: VerificationSettings,
) -> Published:
    """Publish the event to the worker's topic under the feature's delivery policy.

    `emit` (the default): returns once the broker acknowledged it. `await_reply`: also waits,
    under `REPLY__TIMEOUT_MS`, for the worker's answer (request-reply).

    Raises:
        PublishError, RepliesUnavailable, ReplyTimeout: see `DeliveryService` and
            `RequestReply`; the route turns them into HTTP answers.
    """
    message = event.to_message(settings.topic)
    if event.await_reply:
        receipt, reply = await requests.send(message, policy=settings.policy)
        return Published(receipt, reply)
    return Published(await delivery.emit(message, policy=settings.policy))


def register(bus: EventBus) -> None:
    bus.raises(VerificationEmailRequested)
    bus.listen(VerificationEmailRequested, publish_verification_email)
