"""The typed lifespan state: every long-lived client the application owns."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.kafka.publisher import KafkaPublisher


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    publisher: KafkaPublisher
