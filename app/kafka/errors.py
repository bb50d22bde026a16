"""Errors of a publish, in terms of what happened to the message, not of HTTP.

    PublisherStateError (RuntimeError)  the publisher is used before start or after stop:
                                        a programming error, never a broker condition
    PublishError                        the message was not (or not knowingly) delivered
    ├── EncodingError                   the event cannot be turned into bytes; never sent
    ├── RecordTooLarge                  refused by size, by the producer or the broker; not sent
    ├── PublishRejected                 a broker answered with a non-retriable error
    │                                   (authorisation, invalid topic...); not written
    ├── StoreUnavailable                an outbox policy could not store it; not sent
    └── BrokerUnavailable               no broker took the message in time (retriable errors:
        │                               no leader, not enough replicas, connection lost...)
        └── DeliveryTimeout             the policy's deadline passed

Each `PublishError` carries:
- `event_id`: the same on every attempt and replay, for consumers to deduplicate;
- `sent`: False when the message certainly never reached a broker, None when it may have
  (then it may still be written; a retry or replay can duplicate it);
- `retriable`: whether trying again can succeed;
- `cause`: the name of the underlying Kafka error, for logs and the failure store;
- `attempts`: how many attempts were made (set when the publish gives up);
- `record_id`: the store record that keeps the message for replay, if any;
- `in_flight`: when the deadline passed while a broker had the message, a future of its late
  outcome (the receipt, or the error), so whoever keeps the message can learn it was written
  after all instead of sending it again.
"""

from __future__ import annotations

import asyncio
from typing import Any


class PublisherStateError(RuntimeError):
    """The publisher was used outside its started lifetime."""


class PublishError(Exception):
    """A message was not confirmed as delivered."""

    kind = "publish_failed"
    retriable = False

    def __init__(
        self,
        message: str,
        *,
        event_id: str,
        sent: bool | None = False,
        cause: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.sent = sent
        self.cause = cause or type(self).__name__
        self.attempts = attempts
        # set by the delivery service once the message is kept in the store
        self.record_id: str | None = None
        # set by the publisher when a broker still had the message at the deadline
        self.in_flight: asyncio.Future[Any] | None = None


class EncodingError(PublishError):
    kind = "unencodable_event"


class RecordTooLarge(PublishError):
    kind = "record_too_large"


class PublishRejected(PublishError):
    kind = "publish_rejected"


class StoreUnavailable(PublishError):
    kind = "store_unavailable"


class BrokerUnavailable(PublishError):
    kind = "broker_unavailable"
    retriable = True


class DeliveryTimeout(BrokerUnavailable):
    kind = "delivery_timeout"
    retriable = False  # the deadline is the end of this publish; replay may try later
