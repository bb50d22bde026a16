"""The domain event of this feature and its wire format.

Wire format (topic `send.verification.email` by default):
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

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app import logs
from app.kafka.errors import EncodingError
from app.kafka.messages import OutgoingMessage

EVENT_TYPE = "verification_email.requested"
EVENT_VERSION = 1


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationEmailRequested:
    """Someone asked for a verification email to be sent to `email`."""

    email: str
    redirect_url: str
    event_id: str = field(default_factory=_new_event_id)
    occurred_at: datetime = field(default_factory=_now)
    # The requester waits for the worker's reply (request-reply) instead of the receipt only.
    await_reply: bool = False
    # The correlation id of the request that raised it, if any (logs only, not the payload).
    correlation_id: str | None = None

    def to_message(self, topic: str) -> OutgoingMessage:
        """The Kafka record of this event.

        Raises:
            EncodingError: a field cannot be encoded (e.g. a lone surrogate in a string);
                nothing was sent, and nothing is kept: a replay could not encode it either.
        """
        value = {
            "event_id": self.event_id,
            "event_type": EVENT_TYPE,
            "event_version": EVENT_VERSION,
            "occurred_at": self.occurred_at.isoformat(),
            "email": self.email,
            "redirect_url": self.redirect_url,
        }
        try:
            # ensure_ascii=False keeps the value UTF-8, so .encode() meets every character
            encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
            key = self.email.encode()
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise EncodingError(
                f"the event cannot be serialised as JSON: {type(exc).__name__}",
                event_id=self.event_id,
                cause=type(exc).__name__,
            ) from None
        headers = [
            ("event_id", self.event_id.encode()),
            ("event_type", EVENT_TYPE.encode()),
            ("content_type", b"application/json"),
        ]
        if self.correlation_id is not None:
            headers.append((logs.KAFKA_CORRELATION_HEADER, self.correlation_id.encode()))
        return OutgoingMessage(
            topic=topic, key=key, value=encoded, event_id=self.event_id, headers=tuple(headers)
        )
