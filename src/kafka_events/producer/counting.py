"""What one policy's publisher counts: outcomes, latency, publishes in flight and records
awaiting an acknowledgement, in its `Metrics`.

The series of a successful publish are looked up once per topic and outcome: prometheus-client's
`labels()` takes a lock and rebuilds the label tuple on every call.

The two gauges (publishes in flight, records awaiting an acknowledgement) are counts the
publisher keeps in plain integers; a scrape reads them, summed over every publisher of the
policy in the process (`LiveGauge`), so a publish takes no gauge's lock. In prometheus-client's
multiprocess mode a gauge is a file the other processes read: there they are updated as they
change, as before.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Sequence

from prometheus_client import Counter, Gauge, Histogram, values

from kafka_events import errors
from kafka_events.messages import OutgoingMessage
from kafka_events.metrics import Metrics
from kafka_events.receipts import DeliveryReceipt


def _multiprocess() -> bool:
    return values.ValueClass is not values.MutexValue


class Count:
    """A count a gauge reads at scrape time (`LiveGauge`); `inc`/`dec` as a gauge's."""

    __slots__ = ("__weakref__", "_gauge", "value")

    def __init__(self, gauge: Gauge) -> None:
        self.value = 0
        # multiprocess mode: the gauge itself, updated as the count changes
        self._gauge: Gauge | None = gauge if _multiprocess() else None
        if self._gauge is None:
            _live(gauge).add(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount
        if self._gauge is not None:
            self._gauge.inc(amount)

    def dec(self, amount: int = 1) -> None:
        self.value -= amount
        if self._gauge is not None:
            self._gauge.dec(amount)


class LiveGauge:
    """The sum of the live `Count`s of one gauge series, as its value at scrape time."""

    def __init__(self, gauge: Gauge) -> None:
        self._counts: weakref.WeakSet[Count] = weakref.WeakSet()
        self._lock = threading.Lock()  # a scrape may run in another thread
        gauge.set_function(self.value)

    def add(self, count: Count) -> None:
        with self._lock:
            self._counts.add(count)

    def value(self) -> float:
        with self._lock:
            return float(sum(count.value for count in self._counts))


_LIVE: weakref.WeakKeyDictionary[Gauge, LiveGauge] = weakref.WeakKeyDictionary()
_LIVE_LOCK = threading.Lock()


def _live(gauge: Gauge) -> LiveGauge:
    with _LIVE_LOCK:
        live = _LIVE.get(gauge)
        if live is None:
            live = _LIVE[gauge] = LiveGauge(gauge)
        return live


class PublishSeries:
    """The series of the publisher of policy `name`."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self._outcomes: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.in_flight = Count(metrics.publish_in_flight.labels(name))
        self.awaiting = Count(metrics.awaiting_ack.labels(name))

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
