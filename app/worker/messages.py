"""What the worker reads and writes on Kafka, as pure functions (no I/O). The event and its
parsing are the service's; the request-reply and dead-letter formats are the library's
consumer's (`kafka_events.consumer.records`), named here for the worker's readers.

In: a `verification_email.requested` record (see `app.verification.events`), with headers
`event_id` and, when the API had one for the request, `correlation_id` (1-64 of
`A-Z a-z 0-9 . _ : -`; another value is ignored). Both are bound to every line logged while the
record is handled (`app.logs`). Optionally, request-reply headers (the names Spring Kafka's
`ReplyingKafkaTemplate` uses):

- `kafka_replyTopic`: the topic to answer on (UTF-8);
- `kafka_correlationId`: opaque bytes, echoed as the reply's key and header;
- `kafka_replyPartition` (optional): the partition to answer on, decimal ASCII (`b"3"`).

Out:
- a reply: key = the correlation id, headers `kafka_correlationId`, `event_id` and (when the
  request had one) `correlation_id`, JSON value
  `{"event_id", "status": "sent" | "failed" | "duplicate" | "unknown", "detail", "handled_at"}`;
- a dead letter: the original key, value and headers, plus `dlq_error_type`, `dlq_error`,
  `dlq_attempts`, `dlq_source_topic`, `dlq_source_partition`, `dlq_source_offset`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator

from kafka_events.consumer.records import (
    CORRELATION_ID,
    REPLY_PARTITION,
    REPLY_TOPIC,
    InvalidReplyHeaders,
    ReplyAddress,
    dead_letter_headers,
    event_id_of,
    reply_address,
    reply_headers,
    reply_value,
    shorten,
)

__all__ = [  # the request-reply and dead-letter formats are the library's consumer's
    "CORRELATION_ID",
    "REPLY_PARTITION",
    "REPLY_TOPIC",
    "InvalidReplyHeaders",
    "PoisonMessage",
    "ReplyAddress",
    "ReplyStatus",
    "VerificationEmailEvent",
    "dead_letter_headers",
    "event_id_of",
    "parse_event",
    "reply_address",
    "reply_headers",
    "reply_value",
    "shorten",
]


class ReplyStatus(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    # the server got the whole message but gave no final reply: it may have been delivered;
    # recorded so that it is not sent again, and dead-lettered for an operator to resolve
    UNKNOWN = "unknown"


class VerificationEmailEvent(BaseModel):
    """A `verification_email.requested` event as read from Kafka (unknown fields ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(min_length=1, max_length=64)
    # the same as app.verification.events.EVENT_TYPE and EVENT_VERSION (a unit test checks)
    event_type: Literal["verification_email.requested"]
    event_version: Literal[1]
    occurred_at: datetime
    email: EmailStr
    redirect_url: str = Field(max_length=2048)

    @field_validator("redirect_url")
    @classmethod
    def _url(cls, value: str) -> str:
        # Kept as written (pydantic's URL types would normalise it): the link must work as sent.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http or https URL with a host")
        return value


class PoisonMessage(Exception):
    """A record that can never be handled (not JSON, not this event): dead-lettered at once."""

    def __init__(self, error_type: str, detail: str) -> None:
        super().__init__(detail)
        self.error_type = error_type
        self.detail = detail


def parse_event(value: bytes | None) -> VerificationEmailEvent:
    """The event in a record's value.

    Raises:
        PoisonMessage: `EmptyValue`, `InvalidJson` or `InvalidEvent`; the detail names the
            fields at fault, never their values (they may hold an address).
    """
    if not value:
        raise PoisonMessage("EmptyValue", "the record has no value")
    try:
        return VerificationEmailEvent.model_validate_json(value)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise PoisonMessage("InvalidJson", "the value is not JSON") from None
        detail = "; ".join(
            f"{'.'.join(str(part) for part in p['loc']) or 'value'}: {p['msg']}" for p in problems
        )
        raise PoisonMessage("InvalidEvent", shorten(detail)) from None
