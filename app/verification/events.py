"""The domain event of this feature and its wire format.

Wire format (topic `send.verification.email` by default), the library's JSON encoding of a
typed event (`kafka_events.serialization`):
- key: the email address, UTF-8, so one user's messages stay in order on one partition;
- value: JSON `{"event_id", "event_type", "event_version", "occurred_at", "email",
  "redirect_url"}`;
- headers: `event_id`, `event_type`, `content_type` (`application/json`), and
  `correlation_id` when the event was raised for a request that has one (the HTTP request's
  `X-Correlation-ID`, see `app.logs`): consumers log it, so one id follows the request from
  the API to the worker. Not to be confused with request-reply's `kafka_correlationId`,
  which pairs a request with its reply.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka_events import OutgoingMessage, event, to_message

EVENT_TYPE = "verification_email.requested"
EVENT_VERSION = 1


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


@event(key="email", type=EVENT_TYPE, version=EVENT_VERSION)
@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationEmailRequested:
    """Someone asked for a verification email to be sent to `email`."""

    email: str
    redirect_url: str
    event_id: str = field(default_factory=_new_event_id)
    occurred_at: datetime = field(default_factory=_now)

    def to_message(self, topic: str, *, correlation_id: str | None = None) -> OutgoingMessage:
        """The Kafka record of this event, as `KafkaEvents.emit` makes it.

        Raises:
            EncodingError: a field cannot be encoded (e.g. a lone surrogate in a string);
                nothing was sent, and nothing is kept: a replay could not encode it either.
        """
        return to_message(self, topic=topic, correlation_id=correlation_id)
