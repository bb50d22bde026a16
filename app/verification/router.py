"""HTTP routes of the verification-email feature.

`Idempotency-Key` (`kafka_events.idempotency`): a retry with the same key and the same request
publishes the same event id, and within `IDEMPOTENCY__WINDOW_S` gets the first answer again,
unless that answer asked for a retry (a 503 that kept nothing, a 429).
"""

from __future__ import annotations

from asgi_correlation_id import correlation_id as request_correlation_id
from fastapi import APIRouter, Request, Response, status

from app import exceptions, ratelimit
from app.dependencies import State, VerificationRequest
from app.verification import parameters, service
from app.verification.schemas import (
    VerificationEmailAccepted,
    VerificationEmailDelivered,
    VerificationEmailQueued,
    WorkerReply,
)
from kafka_events import DeliveryReceipt, QueuedReceipt, errors, idempotency

router = APIRouter(tags=["verification emails"])


@router.post(
    "/verification-emails",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VerificationEmailAccepted | VerificationEmailQueued | VerificationEmailDelivered,
    summary="Request a verification email",
    openapi_extra=parameters.OPENAPI,
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
            errors.MalformedReply,
            idempotency.IdempotencyKeyInUse,
            idempotency.IdempotencyKeyReused,
        ),
    },
)
async def create_verification_email(
    *,
    body: VerificationRequest,
    state: State,  # the settings, the events and the limiter: one dependency, not four
    response: Response,
    request: Request,
) -> VerificationEmailAccepted | VerificationEmailQueued | VerificationEmailDelivered:
    """Publish a verification-email event; 202 carries the broker's offset metadata."""
    # `Idempotency-Key` and `wait_for` (documented by `parameters.OPENAPI`)
    idempotency_key = parameters.idempotency_key(request)
    await_reply = parameters.wait_for_delivery(request)
    rate_limiter = state.rate_limiter
    key = idempotency.parse_key(idempotency_key) if idempotency_key is not None else None
    keys = state.idempotency
    event_id = None
    if key is not None and keys is not None:
        fingerprint = idempotency.fingerprint(body.model_dump_json(), "delivery" * await_reply)
        kept = keys.begin(key, fingerprint)
        if kept is not None:  # the first answer again; it takes no rate-limit slot
            response.headers["Idempotent-Replayed"] = "true"
            return _replay(kept, response)
        event_id = keys.event_id(key, fingerprint)
    answer: object = None
    try:
        if rate_limiter is not None:  # before anything is published: a refusal sends nothing
            await rate_limiter.acquire(str(body.email))
        published = await service.request_verification_email(
            events=state.kafka,
            settings=state.settings.verification,
            email=str(body.email),
            redirect_url=str(body.redirect_url),
            await_reply=await_reply,
            correlation_id=request_correlation_id.get(),
            event_id=event_id,
        )
        answer = _answer(published)
    except (errors.PublishError, errors.ReplyTimeout, errors.MalformedReply) as error:
        answer = error if _final(error) else None
        raise
    finally:
        if key is not None and keys is not None:
            keys.finish(key, answer)
    return _replay(answer, response)


def _final(error: Exception) -> bool:
    """Whether a failure is the request's last word (kept for a retry): recorded, or published."""
    return not isinstance(error, errors.PublishError) or error.record_id is not None


def _replay(
    answer: object, response: Response
) -> VerificationEmailAccepted | VerificationEmailQueued | VerificationEmailDelivered:
    """Answer as the first time: raise its error again (a fresh traceback), or return its body."""
    if isinstance(answer, Exception):
        raise answer.with_traceback(None)
    if isinstance(answer, VerificationEmailDelivered):
        response.status_code = status.HTTP_200_OK
        return answer
    assert isinstance(answer, VerificationEmailAccepted | VerificationEmailQueued)
    return answer


def _answer(
    published: service.Published,
) -> VerificationEmailAccepted | VerificationEmailQueued | VerificationEmailDelivered:
    receipt = _receipt_body(published.receipt)
    if published.reply is None:
        return receipt
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
    # read from the receipt's attributes: a model_dump() first costs twice the validation
    if isinstance(receipt, QueuedReceipt):
        return VerificationEmailQueued.model_validate(receipt, from_attributes=True)
    return VerificationEmailAccepted.model_validate(receipt, from_attributes=True)
