"""HTTP routes of the verification-email feature."""

from __future__ import annotations

from fastapi import APIRouter, status

from app import exceptions
from app.dependencies import Settings
from app.kafka import errors
from app.kafka.dependencies import Publisher
from app.verification import service
from app.verification.schemas import VerificationEmailAccepted, VerificationEmailRequest

router = APIRouter(tags=["verification emails"])


@router.post(
    "/verification-emails",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VerificationEmailAccepted,
    summary="Request a verification email",
    responses=exceptions.responses_for(
        exceptions.RequestInvalid,
        exceptions.BodyTooLarge,
        errors.RecordTooLarge,
        errors.BrokerUnavailable,
        errors.PublishRejected,
    ),
)
async def create_verification_email(
    *, body: VerificationEmailRequest, publisher: Publisher, settings: Settings
) -> VerificationEmailAccepted:
    """Publish a verification-email event; 202 carries the broker's offset metadata."""
    receipt = await service.request_verification_email(
        publisher=publisher,
        settings=settings.verification,
        email=str(body.email),
        redirect_url=str(body.redirect_url),
    )
    return VerificationEmailAccepted.model_validate(receipt.model_dump())
