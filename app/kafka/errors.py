"""Errors of a publish, in terms of what happened to the message, not of HTTP.

    PublisherStateError (RuntimeError)  the publisher is used before start or after stop:
                                        a programming error, never a broker condition
    PublishError                        the message was not (or not knowingly) delivered
    ├── RecordTooLarge                  refused by size, by the producer or the broker; not sent
    ├── PublishRejected                 a broker answered with a non-retriable error
    │                                   (authorisation, invalid topic, ...); not written
    └── BrokerUnavailable               no broker took the message in time
        └── DeliveryTimeout             the deadline passed; `sent` tells whether the message
                                        had left the process (then it may still be written)

Each `PublishError` carries the event id of the message, so callers can report it and
consumers can deduplicate, and `sent`: False when the message certainly never reached a
broker, None when it may have.
"""

from __future__ import annotations


class PublisherStateError(RuntimeError):
    """The publisher was used outside its started lifetime."""


class PublishError(Exception):
    """A message was not confirmed as delivered."""

    kind = "publish_failed"

    def __init__(self, message: str, *, event_id: str, sent: bool | None = False) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.sent = sent


class RecordTooLarge(PublishError):
    kind = "record_too_large"


class PublishRejected(PublishError):
    kind = "publish_rejected"


class BrokerUnavailable(PublishError):
    kind = "broker_unavailable"


class DeliveryTimeout(BrokerUnavailable):
    kind = "delivery_timeout"
