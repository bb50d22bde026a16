"""HTTP routes of the verification-email feature."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from app import exceptions, ratelimit
from app.dependencies import CorrelationId, RateLimiter, Settings
from app.verification import service
from app.verification.schemas import (
    VerificationEmailAccepted,
    VerificationEmailDelivered,
    VerificationEmailQueued,
    VerificationEmailRequest,
    WorkerReply,
)
from kafka_events import DeliveryReceipt, QueuedReceipt, errors
from kafka_events.fastapi import EventsDep

router = APIRouter(tags=["verification emails"])


@router.post(
    "/verification-emails",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VerificationEmailAccepted | VerificationEmailQueued | VerificationEmailDelivered,
    summary="Request a verification email",
    response_description=(
        "Published: the broker's receipt. Or, when the feature's policy uses the outbox: "
        "queued, with the event id to follow at GET /events/{event_id}."
    ),
    responses={
        200: {
            "model": VerificationEmailDelivered,
            "description": "`wait_for=delivery`: the request's receipt and the worker's reply.",
        },
        **exceptions.responses_for(
            exceptions.RequestInvalid,
            exceptions.BodyTooLarge,
            errors.RecordTooLarge,
            errors.EncodingError,
            ratelimit.RateLimited,
            ratelimit.RateLimitUnavailable,
            errors.BrokerUnavailable,
            errors.PublishRejected,
            errors.StoreUnavailable,
            errors.RepliesUnavailable,
            errors.ReplyTimeout,
        ),
    },
)
async def create_verification_email(
    *,
    body: VerificationEmailRequest,
    events: EventsDep,
    settings: Settings,
    rate_limiter: RateLimiter,
    correlation_id: CorrelationId,
    response: Response,
    wait_for: Annotated[
        Literal["delivery"] | None,
        Query(
            description="`delivery`: wait (at most `REPLY__TIMEOUT_MS`) for the worker's "
            "reply and answer 200 with it (request-reply). Omitted: answer 202 as soon as "
            "Kafka has the event (emit)."
        ),
    ] = None,
) -> VerificationEmailAccepted | VerificationEmailQueued | VerificationEmailDelivered:
    """Publish a verification-email event; 202 carries the broker's offset metadata."""
    if rate_limiter is not None:  # before anything is published: a refusal sends nothing
        await rate_limiter.acquire(str(body.email))
    published = await service.request_verification_email(
        events=events,
        settings=settings.verification,
        email=str(body.email),
        redirect_url=str(body.redirect_url),
        await_reply=wait_for == "delivery",
        correlation_id=correlation_id,
    )
    receipt = _receipt_body(published.receipt)
    if published.reply is None:
        return receipt
    response.status_code = status.HTTP_200_OK
    reply = published.reply
    return VerificationEmailDelivered(
        receipt=receipt,
        reply=WorkerReply(
            event_id=reply.event_id,
            status=reply.status,
            detail=reply.detail,
            handled_at=reply.handled_at,
        ),
    )


def _receipt_body(
    receipt: DeliveryReceipt | QueuedReceipt,
) -> VerificationEmailAccepted | VerificationEmailQueued:
    if isinstance(receipt, QueuedReceipt):
        return VerificationEmailQueued.model_validate(receipt.model_dump())
    return VerificationEmailAccepted.model_validate(receipt.model_dump())
