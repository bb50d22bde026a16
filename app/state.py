"""The typed lifespan state: every long-lived client the application owns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.config import PolicyName, Settings
from app.events.bus import EventBus
from app.failures.relay import Relay
from app.failures.store import MessageStore
from app.kafka.delivery import DeliveryService
from app.kafka.publisher import KafkaPublisher
from app.kafka.replies import ReplyReader
from app.ratelimit import EmailRateLimiter


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    publishers: Mapping[PolicyName, KafkaPublisher]
    store: MessageStore
    relay: Relay
    delivery: DeliveryService
    events: EventBus
    replies: ReplyReader
    # None when RATE_LIMIT__ENABLED=false
    rate_limiter: EmailRateLimiter | None = None
