"""The typed lifespan state: the running `KafkaEvents` and the service's own clients."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.config import Settings
from app.ratelimit import EmailRateLimiter
from kafka_events import KafkaEvents, KafkaPublisher, MessageStore
from kafka_events.idempotency import IdempotencyKeys
from kafka_events.replies import ReplyReader


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    kafka: KafkaEvents
    # None when RATE_LIMIT__ENABLED=false
    rate_limiter: EmailRateLimiter | None = None
    # the answers kept for Idempotency-Key (None: a key is honoured for its event id only)
    idempotency: IdempotencyKeys[object] | None = None

    @property
    def store(self) -> MessageStore:
        return self.kafka.store

    @property
    def publishers(self) -> Mapping[str, KafkaPublisher]:
        return self.kafka.publishers

    @property
    def replies(self) -> ReplyReader:
        """The reply reader (the service always configures request-reply)."""
        assert self.kafka.replies is not None
        return self.kafka.replies
