"""What the feature does, independent of HTTP."""

from __future__ import annotations

from app.config import VerificationSettings
from app.kafka.publisher import KafkaPublisher
from app.kafka.receipts import DeliveryReceipt
from app.verification.events import VerificationEmailRequested


async def request_verification_email(
    *, publisher: KafkaPublisher, settings: VerificationSettings, email: str, redirect_url: str
) -> DeliveryReceipt:
    """Publish a `VerificationEmailRequested` event and return the broker's receipt.

    Raises:
        PublishError: see `KafkaPublisher.publish`; the event id is on the error.
    """
    event = VerificationEmailRequested(email=email, redirect_url=redirect_url)
    return await publisher.publish(event.to_message(settings.topic))
