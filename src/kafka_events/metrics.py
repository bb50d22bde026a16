"""Prometheus metrics of publishing, the store and the relay, in a registry you give.

Nothing is registered at import time. `Metrics(registry)` creates the series in `registry`
(prometheus-client's `REGISTRY` if you want them beside your others); create one per registry
and process, and hand it to every `KafkaEvents` of that process. `Metrics(None)` counts into
series that no registry exposes: the default when you pass no metrics.

Publishing (labels: `topic`, `policy`; `outcome` is `delivered`, `unconfirmed` for acks=0, or
the error kind of `kafka_events.errors`: `delivery_timeout`, `broker_unavailable`,
`publish_rejected`, `record_too_large`, `unencodable_event`):

    kafka_events_publish_total{topic,policy,outcome}       publishes that ended, by outcome
    kafka_events_publish_duration_seconds{topic,policy}    time to the broker's acknowledgement
    kafka_events_publish_retries_total{topic,policy,cause} retried attempts, by Kafka error
    kafka_events_publish_in_flight{policy}                 publishes started, not yet ended
    kafka_events_producer_awaiting_ack{policy}             records in the producer's buffer
                                                           or on the wire, not acknowledged
    kafka_events_producer_ready{policy}                    1 when connected, 0 otherwise

Failure store and replay (`origin`: `failed` or `outbox`):

    kafka_events_recorded_total{topic,policy,origin}       messages kept in the store
    kafka_events_record_failures_total{topic,policy}       publish failed and the store could
                                                           not keep it either
    kafka_events_replayed_total{topic,policy,outcome}      relay publishes: delivered, failed,
                                                           abandoned
    kafka_events_acknowledged_late_total{policy}           records acknowledged after their
                                                           deadline (not replayed)
    kafka_events_relay_replaying                           1 while this process's relay holds
                                                           the store's lease
    kafka_events_store_messages{status}                    records pending replay / abandoned
                                                           (set by `count_stored`)
    kafka_events_relay_unmarked                            records Kafka acknowledged that the
                                                           store could not mark delivered yet
                                                           (held in memory, never republished)

Request-reply and supervision:

    kafka_events_replies_unusable_total{reason}            reply records skipped: `unreadable`
                                                           (cannot be decoded) or `malformed`
                                                           (not a reply's JSON)
    kafka_events_task_restarts_total{task}                 background tasks (`relay`,
                                                           `reply_reader`) that died and were
                                                           started again

The gauges name their multiprocess mode, so an application that runs several processes in
prometheus-client's multiprocess mode sums them correctly.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Publish latency is a few ms on a healthy cluster and bounded by the policy's deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The library's series, registered in `registry` (None: in no registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.published = Counter(
            "kafka_events_publish",
            "Publishes that ended, by outcome.",
            ["topic", "policy", "outcome"],
            registry=registry,
        )
        self.publish_duration = Histogram(
            "kafka_events_publish_duration_seconds",
            "Time from publish to the broker's acknowledgement, retries included (successes only).",
            ["topic", "policy"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.publish_retries = Counter(
            "kafka_events_publish_retries",
            "Publish attempts that failed with a retriable error and were tried again.",
            ["topic", "policy", "cause"],
            registry=registry,
        )
        self.publish_in_flight = Gauge(
            "kafka_events_publish_in_flight",
            "Publishes started and not yet ended (waiting for a key's turn, a broker or an ack).",
            ["policy"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.awaiting_ack = Gauge(
            "kafka_events_producer_awaiting_ack",
            "Records handed to the producer (buffered or on the wire) and not yet acknowledged.",
            ["policy"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.producer_ready = Gauge(
            "kafka_events_producer_ready",
            "1 when the policy's producer is connected, 0 while connecting, fenced or stopped.",
            ["policy"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.recorded = Counter(
            "kafka_events_recorded",
            "Messages kept in the store: failed publishes, and outbox messages.",
            ["topic", "policy", "origin"],
            registry=registry,
        )
        self.record_failures = Counter(
            "kafka_events_record_failures",
            "Failed publishes the store could not keep either (the caller was told: no record id).",
            ["topic", "policy"],
            registry=registry,
        )
        self.replayed = Counter(
            "kafka_events_replayed",
            "Stored messages the relay tried to publish, by outcome.",
            ["topic", "policy", "outcome"],
            registry=registry,
        )
        self.acknowledged_late = Counter(
            "kafka_events_acknowledged_late",
            "Stored messages acknowledged after their deadline, marked delivered instead of "
            "replayed.",
            ["policy"],
            registry=registry,
        )
        self.relay_replaying = Gauge(
            "kafka_events_relay_replaying",
            "1 while this process's relay holds the store's relay lease and replays (summed: 1 "
            "per store).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.relay_unmarked = Gauge(
            "kafka_events_relay_unmarked",
            "Records Kafka acknowledged whose delivery the store could not be told yet.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.replies_unusable = Counter(
            "kafka_events_replies_unusable",
            "Reply records skipped: unreadable (cannot be decoded) or malformed.",
            ["reason"],
            registry=registry,
        )
        self.task_restarts = Counter(
            "kafka_events_task_restarts",
            "Background tasks that died and were started again by their supervisor.",
            ["task"],
            registry=registry,
        )
        self.store_messages = Gauge(
            "kafka_events_store_messages",
            "Stored messages by status (pending: waiting for replay; abandoned: needs an "
            "operator).",
            ["status"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
