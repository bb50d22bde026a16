"""The service's `KafkaEvents`, made from its settings: the only place that wires the library."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.config import Settings
from app.metrics import kafka_metrics
from kafka_events import KafkaEvents, SqlStore

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


def kafka_events(settings: Settings, *, tracer: Tracer | None = None) -> KafkaEvents:
    """One process's `KafkaEvents`: the three policies (a producer each), the SQL store, the
    relay, and request-reply over `REPLY__TOPIC`."""
    return KafkaEvents(
        settings.kafka,
        store=SqlStore(settings.store.url),
        policies=settings.kafka.policies.as_mapping(),
        default_policy=settings.verification.policy.value,
        replay=settings.replay,
        replies=settings.reply,
        metrics=kafka_metrics(),
        tracer=tracer,
    )
