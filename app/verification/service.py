"""What the feature does, independent of HTTP."""

from __future__ import annotations

from app.config import VerificationSettings
from app.kafka.delivery import DeliveryService, QueuedReceipt
from app.kafka.receipts import DeliveryReceipt
from app.verification.events import VerificationEmailRequested


async def request_verification_email(
    *, delivery: DeliveryService, settings: VerificationSettings, email: str, redirect_url: str
) -> DeliveryReceipt | QueuedReceipt:
    """Deliver a `VerificationEmailRequested` event under the feature's policy.

    Raises:
        PublishError: see `DeliveryService.emit`; the event id (and record id) are on it.
    """
    event = VerificationEmailRequested(email=email, redirect_url=redirect_url)
    return await delivery.emit(event.to_message(settings.topic), policy=settings.policy)
