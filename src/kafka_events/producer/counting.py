"""What one policy's publisher counts: outcomes, latency, publishes in flight and records
awaiting an acknowledgement, in its `Metrics`.

The series of a successful publish are looked up once per topic and outcome: prometheus-client's
`labels()` takes a lock and rebuilds the label tuple on every call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from kafka_events import errors
from kafka_events.messages import OutgoingMessage
from kafka_events.metrics import Metrics
from kafka_events.receipts import DeliveryReceipt


class PublishSeries:
    """The series of the publisher of policy `name`."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self._outcomes: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.in_flight: Gauge = metrics.publish_in_flight.labels(name)
        self.awaiting: Gauge = metrics.awaiting_ack.labels(name)

    async def measured(
        self, messages: Sequence[OutgoingMessage], publishing: Awaitable[list[DeliveryReceipt]]
    ) -> list[DeliveryReceipt]:
        """Await `publishing` of `messages`, counting each message's outcome and latency."""
        in_flight = self.in_flight
        in_flight.inc(len(messages))
        try:
            receipts = await publishing
        except errors.PublishError as error:
            for message in messages:
                self._metrics.published.labels(message.topic, self._name, error.kind).inc()
            raise
        finally:
            in_flight.dec(len(messages))
        for receipt in receipts:
            outcome = "delivered" if receipt.confirmed else "unconfirmed"
            published, duration = self._series(receipt.topic, outcome)
            published.inc()
            duration.observe(receipt.elapsed_ms / 1000)
        return receipts

    def _series(self, topic: str, outcome: str) -> tuple[Counter, Histogram]:
        """The publish counter of `outcome` and the latency histogram, for `topic`."""
        series = self._outcomes.get((topic, outcome))
        if series is None:
            series = self._outcomes[topic, outcome] = (
                self._metrics.published.labels(topic, self._name, outcome),
                self._metrics.publish_duration.labels(topic, self._name),
            )
        return series
