"""Request and response bodies of the verification-email routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    UrlConstraints,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from app.verification import hosts
from kafka_events.receipts import DeliveryReceipt, QueuedReceipt

LOCAL_PART_MAX_OCTETS = 64


def _local_part_fits(address: str) -> str:
    # email-validator checks the domain (253 octets, labels of 63) and the whole address (254);
    # the local part's 64 octets (RFC 5321 4.5.3.1.1) only in its `strict` mode, and in
    # characters, not octets.
    size = len(address.rpartition("@")[0].encode())
    if size > LOCAL_PART_MAX_OCTETS:
        raise PydanticCustomError(
            "email_local_part_too_long",
            "value is not a valid email address: the part before the @-sign is {size} octets, "
            "at most 64 are allowed (RFC 5321)",
            {"size": size},
        )
    return address


def _no_userinfo_and_rfc_lengths(url: AnyUrl) -> AnyUrl:
    if url.username is not None or url.password is not None:
        raise PydanticCustomError(
            "url_userinfo",
            "a redirect URL may not carry user info: in https://app.example.com@evil.example/ "
            "the host is evil.example",
        )
    assert url.host is not None  # host_required
    if (problem := hosts.name_problem(url.host)) is not None:
        raise PydanticCustomError("url_host_invalid", problem)
    return url


EmailAddress = Annotated[EmailStr, AfterValidator(_local_part_fits)]
# http(s) only, a host required, short enough to fit in an email comfortably, no user info,
# RFC 1035 lengths; the host itself is then checked against VERIFICATION__REDIRECT_HOSTS.
RedirectUrl = Annotated[
    AnyUrl,
    UrlConstraints(max_length=2048, allowed_schemes=["http", "https"], host_required=True),
    AfterValidator(_no_userinfo_and_rfc_lengths),
]

EMAIL_RULES = (
    "Address to verify: at most 254 octets, 64 before the @-sign, a domain of at most 253 "
    "with labels of at most 63 (RFC 5321 and 1035), a domain that public DNS can resolve "
    "(not `.test`, `.local`, `.localhost`, `.invalid`...), no IP literal. A display name "
    "(`Ada <ada@example.com>`) is dropped."
)
REDIRECT_RULES = (
    "Where the link in the email leads. Refused: a scheme other than http or https; more than "
    "2048 characters; user info (`https://app.example.com@evil.example/` leads to "
    "evil.example); a host name over 253 octets, a label over 63 or an empty one (RFC 1035). "
    "When the service lists the hosts it links to (`VERIFICATION__REDIRECT_HOSTS`), any other "
    "host. When it lists none: loopback (`localhost`, `127.0.0.1`, `[::1]`), link-local "
    "(`169.254.0.0/16`, `fe80::/10`), private, shared, reserved, multicast and unspecified "
    "addresses, cloud metadata hosts (`169.254.169.254`, `[fd00:ec2::254]`, "
    "`metadata.google.internal`), special-use names (`.local`, `.internal`, `.test`...) and "
    "one-label names. IP addresses count in every spelling: `http://2130706433/`, "
    "`http://0x7f.1/` and `http://[::ffff:127.0.0.1]/` are all 127.0.0.1. Each refusal is a "
    "422 `invalid_request` naming `redirect_url`."
)


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

    email: EmailAddress = Field(max_length=254, description=EMAIL_RULES)
    redirect_url: RedirectUrl = Field(description=REDIRECT_RULES)


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
