"""HTTP routes of the verification-email feature."""

from __future__ import annotations

from fastapi import APIRouter, status

from app import exceptions
from app.dependencies import Settings
from app.kafka import errors
from app.kafka.delivery import QueuedReceipt
from app.kafka.dependencies import Delivery
from app.verification import service
from app.verification.schemas import (
    VerificationEmailAccepted,
    VerificationEmailQueued,
    VerificationEmailRequest,
)

router = APIRouter(tags=["verification emails"])


@router.post(
    "/verification-emails",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VerificationEmailAccepted | VerificationEmailQueued,
    summary="Request a verification email",
    response_description=(
        "Published: the broker's receipt. Or, when the feature's policy uses the outbox: "
        "queued, with the event id to follow at GET /events/{event_id}."
    ),
    responses=exceptions.responses_for(
        exceptions.RequestInvalid,
        exceptions.BodyTooLarge,
        errors.RecordTooLarge,
        errors.EncodingError,
        errors.BrokerUnavailable,
        errors.PublishRejected,
    ),
)
async def create_verification_email(
    *, body: VerificationEmailRequest, delivery: Delivery, settings: Settings
) -> VerificationEmailAccepted | VerificationEmailQueued:
    """Publish a verification-email event; 202 carries the broker's offset metadata."""
    receipt = await service.request_verification_email(
        delivery=delivery,
        settings=settings.verification,
        email=str(body.email),
        redirect_url=str(body.redirect_url),
    )
    if isinstance(receipt, QueuedReceipt):
        return VerificationEmailQueued.model_validate(receipt.model_dump())
    return VerificationEmailAccepted.model_validate(receipt.model_dump())
