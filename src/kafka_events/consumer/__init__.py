"""The consumer side: a runner that hands each record of a topic to a handler, once
(`runner`), the dedup table handlers check (`handled`), the request-reply and dead-letter
record formats (`records`), and its metrics (`metrics`)."""

from kafka_events.consumer.handled import HandledEvent, HandledEvents
from kafka_events.consumer.handling import (
    ConsumerConfig,
    Handler,
    Outcome,
    RetryLater,
    RunnerState,
    Stopping,
    Tools,
)
from kafka_events.consumer.metrics import ConsumerMetrics
from kafka_events.consumer.runner import ConsumerRunner

__all__ = [
    "ConsumerConfig",
    "ConsumerMetrics",
    "ConsumerRunner",
    "HandledEvent",
    "HandledEvents",
    "Handler",
    "Outcome",
    "RetryLater",
    "RunnerState",
    "Stopping",
    "Tools",
]
