"""Prometheus metrics of a consumer runner, in a registry you give (as `kafka_events.metrics`).

kafka_events_worker_records_total{topic,outcome}       records handled and committed, by
                                                       the handler's outcome status
kafka_events_worker_handle_duration_seconds{topic}     from read to handled
kafka_events_worker_retries_total{topic}               records handled again after a Kafka
                                                       or database failure
kafka_events_worker_lag{topic,partition}               records behind the partition's end
kafka_events_worker_poison_total{topic,kind}           records that could not be handled as
                                                       they are: `unreadable` (skipped by
                                                       offset), `handler_error`, and dead
                                                       letters that were too large
                                                       (`dead_letter_truncated`,
                                                       `dead_letter_reference`)
kafka_events_worker_loop_restarts_total{topic}         times the consumer loop died and was
                                                       started again
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Handling a record may include a slow side effect (an email over SMTP, with retries).
HANDLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ConsumerMetrics:
    """The consumer's series, registered in `registry` (None: in no registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.records = Counter(
            "kafka_events_worker_records",
            "Records the worker handled and committed, by outcome.",
            ["topic", "outcome"],
            registry=registry,
        )
        self.handle_duration = Histogram(
            "kafka_events_worker_handle_duration_seconds",
            "Time to handle one record, from read to handled (side effects and reply included).",
            ["topic"],
            buckets=HANDLE_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "kafka_events_worker_retries",
            "Records left uncommitted after a Kafka or database failure, to be handled again.",
            ["topic"],
            registry=registry,
        )
        self.poison = Counter(
            "kafka_events_worker_poison",
            "Records that could not be handled as they are, by kind (see the module doc).",
            ["topic", "kind"],
            registry=registry,
        )
        self.loop_restarts = Counter(
            "kafka_events_worker_loop_restarts",
            "Times the consumer loop died and was started again by its supervisor.",
            ["topic"],
            registry=registry,
        )
        self.lag = Gauge(
            "kafka_events_worker_lag",
            "Records between the worker's position and the end of the partition.",
            ["topic", "partition"],
            multiprocess_mode="livesum",
            registry=registry,
        )
