"""Every error the library raises, in terms of what happened to the message, not of HTTP.

    KafkaEventsError                    the root: catch it to catch everything below
    ├── ConfigurationError (ValueError) the configuration cannot work; found at construction
    ├── PublisherStateError             used before start or after stop: a programming
    │                                   error, never a broker condition
    ├── AccessRefused                   Kafka answered and refused this client (credentials,
    │                                   TLS trust, ACLs): fix the configuration, do not retry
    ├── RepliesUnavailable              request-reply while the reply topic is not read;
    │                                   nothing was sent
    ├── ReplyTimeout                    the request was published (see `receipt`), but no
    │                                   reply came in time
    ├── StoreError                      the message store failed (its database, a timeout)
    └── PublishError                    the message was not (or not knowingly) delivered
        ├── EncodingError               the event cannot be turned into bytes; never sent
        ├── RecordTooLarge              refused by size, by the producer or the broker
        ├── PublishRejected             a broker answered with a non-retriable error
        │                               (authorisation, invalid topic...); not written
        ├── StoreUnavailable            an outbox policy could not store it; not sent
        └── BrokerUnavailable           no broker took the message in time (retriable errors:
            │                           no leader, not enough replicas, connection lost...)
            └── DeliveryTimeout         the policy's deadline passed

Each `PublishError` carries, from its constructor on:
- `event_id`: the same on every attempt and replay, for consumers to deduplicate;
- `sent`: False when the message certainly never reached a broker, None when it may have
  (then it may still be written; a retry or replay can duplicate it);
- `retriable`: whether trying again can succeed;
- `cause`: the name of the underlying Kafka error, for logs and the store;
- `attempts`: how many attempts were made;
- `record_id`: the store record that keeps the message for replay, if any;
- `in_flight`: when the deadline passed while a broker had the message, a future of its late
  outcome (the receipt, or the error), so whoever keeps the message can learn it was written
  after all instead of sending it again.

A later layer that learns more (the delivery service that recorded the message) raises a new
error made with `replace()`, never changes the one it caught.

aiokafka's errors are mapped here, once (`from_kafka_error`); nothing above the producer sees
one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Self

from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
)

if TYPE_CHECKING:
    from kafka_events.receipts import DeliveryReceipt, QueuedReceipt


class KafkaEventsError(Exception):
    """The root of every error of this library."""


class ConfigurationError(KafkaEventsError, ValueError):
    """The configuration given to a constructor cannot work."""


class PublisherStateError(KafkaEventsError, RuntimeError):
    """The publisher was used outside its started lifetime."""


class AccessRefused(KafkaEventsError):
    """Kafka answered and refused this client: fix the configuration, do not retry.

    Its message is one line: the cause, the user, the broker, and the settings to check
    (named in backticks, relative to `KafkaConfig`); never the password.
    """


class RepliesUnavailable(KafkaEventsError):
    """The reply reader is not running (Kafka unreachable since start-up): nothing was sent."""


class ReplyTimeout(KafkaEventsError):
    """No reply within the deadline; the request itself was published (see `receipt`)."""

    def __init__(self, receipt: DeliveryReceipt | QueuedReceipt, timeout_ms: int) -> None:
        super().__init__(f"no reply within {timeout_ms} ms")
        self.receipt = receipt
        self.timeout_ms = timeout_ms


class MalformedReply(KafkaEventsError):
    """A reply came, but it is not a reply (not a JSON object with a `status`); the request
    itself was published (see `receipt`)."""

    def __init__(self, receipt: DeliveryReceipt | QueuedReceipt, reason: str) -> None:
        super().__init__(f"the consumer's reply could not be read ({reason})")
        self.receipt = receipt


class PublishError(KafkaEventsError):
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
        retriable: bool | None = None,
        record_id: str | None = None,
        in_flight: asyncio.Future[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.sent = sent
        self.cause = cause or type(self).__name__
        self.attempts = attempts
        if retriable is not None:
            self.retriable = retriable
        self.record_id = record_id
        self.in_flight = in_flight

    def replace(self, **changes: Any) -> Self:
        """A copy of this error (same class and message) with `changes` to its fields."""
        fields: dict[str, Any] = {
            "event_id": self.event_id,
            "sent": self.sent,
            "cause": self.cause,
            "attempts": self.attempts,
            "retriable": self.retriable,
            "record_id": self.record_id,
            "in_flight": self.in_flight,
        }
        return type(self)(str(self), **{**fields, **changes})


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


def maybe_sent(stage: str) -> bool | None:
    """False when a message at `stage` certainly never left the process, None when it may have."""
    return None if stage in ("acknowledge", "transaction") else False


def from_kafka_error(exc: KafkaError, *, event_id: str, stage: str) -> PublishError:
    """The `PublishError` for aiokafka's `exc`, raised while a publish was at `stage`."""
    cause = type(exc).__name__
    if isinstance(exc, MessageSizeTooLargeError):
        return RecordTooLarge(
            "the message is larger than the producer's or the broker's limit",
            event_id=event_id,
            cause=cause,
        )
    if isinstance(exc, ProducerClosed):
        return BrokerUnavailable(
            "the publisher is stopping", event_id=event_id, sent=maybe_sent(stage), retriable=False
        )
    # KafkaTimeoutError: no metadata for the topic or the buffer stayed full: try again later.
    if isinstance(exc, KafkaTimeoutError) or getattr(exc, "retriable", False):
        return BrokerUnavailable(
            f"broker error: {cause}", event_id=event_id, sent=maybe_sent(stage), cause=cause
        )
    return PublishRejected(f"rejected by the broker: {cause}", event_id=event_id, cause=cause)


class StoreError(KafkaEventsError):
    """The message store could not do what was asked (its database failed or timed out)."""
