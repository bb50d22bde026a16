"""Request and response bodies of the verification-email routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AnyUrl, BaseModel, ConfigDict, EmailStr, Field, UrlConstraints
from pydantic.config import JsonDict

from kafka_events.receipts import DeliveryReceipt, QueuedReceipt

# http(s) only, a host required, and short enough to fit in an email comfortably.
RedirectUrl = Annotated[
    AnyUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"], host_required=True)
]


class VerificationEmailRequest(BaseModel):
    """Ask for a verification email to be sent to `email`, linking back to `redirect_url`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}
            ]
        },
    )

    email: EmailStr = Field(max_length=254, description="Address to verify.")
    redirect_url: RedirectUrl = Field(
        description="Where the link in the email leads (http or https, at most 2048 characters)."
    )


_RECEIPT_EXAMPLE: JsonDict = {
    "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
    "topic": "send.verification.email",
    "partition": 0,
    "offset": 42,
    "timestamp": 1795605914242,
    "timestamp_type": "CreateTime",
    "log_start_offset": 0,
    "policy": "replicated",
    "acks": "all",
    "idempotent": True,
    "confirmed": True,
    "attempts": 1,
    "elapsed_ms": 3.2,
    "deadline_ms": 5000,
}


class VerificationEmailAccepted(DeliveryReceipt):
    """The request was published; this is the broker's receipt for it."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [_RECEIPT_EXAMPLE]},
    )


class VerificationEmailQueued(QueuedReceipt):
    """The request is stored in the outbox; the relay publishes it shortly."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
                    "record_id": "4d0c1c1e-2b1a-4a63-8d0b-0c4b1e0f9a77",
                    "topic": "send.verification.email",
                    "policy": "replicated",
                    "status": "queued",
                }
            ]
        },
    )


class WorkerReply(BaseModel):
    """The worker's answer to a request that asked for one."""

    model_config = ConfigDict(frozen=True)

    event_id: str | None = Field(description="The event the worker handled.")
    status: str = Field(
        description="sent: the email went out. failed: it could not be sent and was moved to "
        "the dead-letter topic (`detail` says why). duplicate: this event was handled before."
    )
    detail: str | None = Field(description="Why it failed, when it did.")
    handled_at: datetime | None = Field(description="When the worker handled it (UTC).")


class VerificationEmailDelivered(BaseModel):
    """`wait_for=delivery`: the request's receipt and the worker's reply."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "receipt": _RECEIPT_EXAMPLE,
                    "reply": {
                        "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
                        "status": "sent",
                        "detail": None,
                        "handled_at": "2026-11-25T10:00:00.123456+00:00",
                    },
                }
            ]
        },
    )

    receipt: VerificationEmailAccepted | VerificationEmailQueued = Field(
        description="Where the request was published (or queued, with the outbox)."
    )
    reply: WorkerReply
