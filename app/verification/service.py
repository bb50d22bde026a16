"""What the feature does, independent of HTTP: raise the domain event, return what it gave."""

from __future__ import annotations

from app import logs
from app.events import EventBus
from app.verification.events import VerificationEmailRequested
from app.verification.listeners import Published, publish_verification_email


async def request_verification_email(
    *,
    events: EventBus,
    email: str,
    redirect_url: str,
    await_reply: bool = False,
    correlation_id: str | None = None,
) -> Published:
    """Raise `VerificationEmailRequested`; its publishing listener's outcome is the answer.

    Other listeners of the event run too; their failures are theirs (isolated and logged).
    The event carries `correlation_id` (the request's) to Kafka, and every line logged while
    it is dispatched carries its event id.

    Raises:
        Whatever the publishing listener raised: PublishError (recorded), RepliesUnavailable,
        ReplyTimeout.
    """
    event = VerificationEmailRequested(
        email=email,
        redirect_url=redirect_url,
        await_reply=await_reply,
        correlation_id=correlation_id,
    )
    with logs.bound(event_id=event.event_id):
        dispatched = await events.dispatch(event)
    result: Published = dispatched.result_of(publish_verification_email)
    return result
