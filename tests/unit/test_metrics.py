"""Prometheus metrics: what the publisher, the delivery service and the relay count, and what
`GET /metrics` exposes (no broker: fakes and a closed port; tests/integration counts real
publishes and the worker's consumption).

The metrics live in the process-wide registry, so every test compares before and after.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaConnectionError,
    NotEnoughReplicasError,
    TopicAuthorizationFailedError,
)
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.config import MetricsSettings, PolicyName
from app.metrics import kafka_metrics
from kafka_events import StoreError, errors
from kafka_events.delivery import DeliveryService
from kafka_events.messages import OutgoingMessage
from kafka_events.producer import ProducerState as PublisherState
from kafka_events.store import SqlStore, StoredMessage
from kafka_events.store.relay import Relay
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port
from tests.library.test_publisher import FakeProducer, make_publisher

FAST_RETRY = {"retries": 5, "initial_retry_time_ms": 1, "max_retry_time_ms": 2}
POLICY = PolicyName.REPLICATED.value
METRICS = kafka_metrics()  # the service's series, in the process-wide registry


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def message(topic: str) -> OutgoingMessage:
    return OutgoingMessage(topic=topic, value=b"{}", key=b"k", event_id=str(uuid.uuid4()))


def counter(topic: str, outcome: str) -> Callable[[], float]:
    return lambda: sample("kafka_events_publish_total", topic=topic, policy=POLICY, outcome=outcome)


async def test_a_delivered_publish_is_counted_with_its_latency_and_retries() -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    delivered = counter(topic, "delivered")
    publisher = make_publisher(
        FakeProducer(send_errors=[NotEnoughReplicasError(), KafkaConnectionError()]),
        retry=FAST_RETRY,
        metrics=METRICS,
    )
    await publisher.start()
    ready = sample("kafka_events_producer_ready", policy=POLICY)

    await publisher.publish(message(topic))
    await publisher.stop()

    assert ready == 1
    assert sample("kafka_events_producer_ready", policy=POLICY) == 0
    assert delivered() == 1
    assert sample("kafka_events_publish_duration_seconds_count", topic=topic, policy=POLICY) == 1
    retries = {
        cause: sample("kafka_events_publish_retries_total", topic=topic, policy=POLICY, cause=cause)
        for cause in ("NotEnoughReplicasError", "KafkaConnectionError")
    }
    assert retries == {"NotEnoughReplicasError": 1, "KafkaConnectionError": 1}
    assert sample("kafka_events_publish_in_flight", policy=POLICY) == 0
    assert sample("kafka_events_producer_awaiting_ack", policy=POLICY) == 0


async def test_the_gauges_read_what_is_in_flight_now_summed_over_the_policys_publishers() -> None:
    publishers = [
        make_publisher(FakeProducer(never_ack=True), delivery_timeout_ms=5000, metrics=METRICS)
        for _ in range(2)
    ]
    for publisher in publishers:
        await publisher.start()
    in_flight = sample("kafka_events_publish_in_flight", policy=POLICY)
    awaiting = sample("kafka_events_producer_awaiting_ack", policy=POLICY)

    tasks = [
        asyncio.create_task(
            publisher.publish(
                OutgoingMessage(topic="t-gauges", value=b"{}", key=bytes([n]), event_id=str(n))
            )
        )
        for n, publisher in enumerate((*publishers, publishers[0]))
    ]
    await asyncio.sleep(0.05)  # sent; never acknowledged
    held = (
        sample("kafka_events_publish_in_flight", policy=POLICY) - in_flight,
        sample("kafka_events_producer_awaiting_ack", policy=POLICY) - awaiting,
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for publisher in publishers:
        await publisher.stop()

    assert held == (3.0, 3.0)
    assert [p.awaiting_acknowledgement for p in publishers] == [0, 0]
    assert sample("kafka_events_publish_in_flight", policy=POLICY) == in_flight
    assert sample("kafka_events_producer_awaiting_ack", policy=POLICY) == awaiting


@pytest.mark.parametrize(
    ("producer", "outcome"),
    [
        (FakeProducer(send_error=TopicAuthorizationFailedError()), "publish_rejected"),
        (FakeProducer(never_ack=True), "delivery_timeout"),
        (FakeProducer(send_error=NotEnoughReplicasError()), "broker_unavailable"),
    ],
    ids=["rejected", "timeout", "unavailable"],
)
async def test_a_failed_publish_is_counted_by_its_error_kind(
    producer: FakeProducer, outcome: str
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    publisher = make_publisher(
        producer,
        retry={**FAST_RETRY, "retries": 1},
        delivery_timeout_ms=300,
        attempt_timeout_ms=300,
        metrics=METRICS,
    )
    await publisher.start()

    with pytest.raises(errors.PublishError):
        await publisher.publish(message(topic))
    await publisher.stop()

    assert counter(topic, outcome)() == 1
    assert counter(topic, "delivered")() == 0
    assert sample("kafka_events_publish_duration_seconds_count", topic=topic, policy=POLICY) == 0
    assert sample("kafka_events_publish_in_flight", policy=POLICY) == 0


class _SignallingProducer(FakeProducer):
    def __init__(self) -> None:
        super().__init__(never_ack=True)
        self.handed_over = asyncio.Event()

    async def send(
        self, topic: str, value: bytes | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        future = await super().send(topic, value, **options)
        self.handed_over.set()
        return future


async def test_awaiting_ack_counts_records_the_broker_has_not_acknowledged() -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    producer = _SignallingProducer()
    publisher = make_publisher(
        producer, delivery_timeout_ms=5000, attempt_timeout_ms=5000, metrics=METRICS
    )
    await publisher.start()
    before = sample("kafka_events_producer_awaiting_ack", policy=POLICY)

    publishing = asyncio.create_task(publisher.publish(message(topic)))
    async with asyncio.timeout(2):
        await producer.handed_over.wait()
    await asyncio.sleep(0)  # the publisher now awaits the acknowledgement
    during = sample("kafka_events_producer_awaiting_ack", policy=POLICY)
    in_flight = sample("kafka_events_publish_in_flight", policy=POLICY)
    producer.futures[0].set_result(producer.ack)
    await publishing
    await publisher.stop()

    assert (during - before, in_flight) == (1, 1)
    assert sample("kafka_events_producer_awaiting_ack", policy=POLICY) == before


async def test_recorded_failures_outbox_messages_and_replays_are_counted(
    tmp_path: Path,
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/store.db")
    await store.open()
    failing = make_publisher(
        FakeProducer(send_error=NotEnoughReplicasError()),
        FakeProducer(),  # the relay's replay succeeds on a fresh producer
        delivery_timeout_ms=300,
        attempt_timeout_ms=300,
        metrics=METRICS,
    )
    await failing.start()
    delivery = DeliveryService({POLICY: failing}, store, metrics=METRICS)

    with pytest.raises(errors.BrokerUnavailable):
        await delivery.emit(message(topic), policy=PolicyName.REPLICATED)
    recorded = sample("kafka_events_recorded_total", topic=topic, policy=POLICY, origin="failed")
    await failing.stop()
    replaying = make_publisher(FakeProducer(), metrics=METRICS)
    await replaying.start()
    relay = Relay(store, {POLICY: replaying}, make_settings("x:1", topic).replay, metrics=METRICS)
    result = await relay.run_round()
    await replaying.stop()
    await store.close()

    assert recorded == 1
    assert result.delivered == 1
    assert (
        sample("kafka_events_replayed_total", topic=topic, policy=POLICY, outcome="delivered") == 1
    )


class _BrokenStore(SqlStore):
    async def record(self, *_: Any, **__: Any) -> StoredMessage:
        raise StoreError("the store could not record the message: OperationalError")


async def test_a_failure_the_store_cannot_keep_is_counted() -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    publisher = make_publisher(
        FakeProducer(send_error=TopicAuthorizationFailedError()),
        delivery_timeout_ms=300,
        metrics=METRICS,
    )
    await publisher.start()
    delivery = DeliveryService({POLICY: publisher}, _BrokenStore("sqlite://"), metrics=METRICS)

    with pytest.raises(errors.PublishRejected) as caught:
        await delivery.emit(message(topic), policy=PolicyName.REPLICATED)
    await publisher.stop()

    assert caught.value.record_id is None
    assert sample("kafka_events_record_failures_total", topic=topic, policy=POLICY) == 1


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        f"127.0.0.1:{closed_port()}", "t-metrics", delivery_timeout_ms=300, connect_timeout_ms=200
    )
    async with running_app(settings) as running:
        yield running.client


async def test_metrics_page_exposes_publishes_store_backlog_and_http_requests(
    client: httpx.AsyncClient,
) -> None:
    # no broker: the publish fails within its deadline and is recorded (503 with its id)
    refused = await client.post(
        "/verification-emails",
        json={"email": "ada@example.com", "redirect_url": "https://app.example.com/v"},
    )
    invalid = await client.post("/verification-emails", json={})

    page = await client.get("/metrics")

    assert (refused.status_code, invalid.status_code) == (503, 422)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(page.text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("kafka_events_store_messages", (("status", "pending"),))] >= 1
    assert samples[("kafka_events_producer_ready", (("policy", POLICY),))] == 0
    http = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "http_requests_total" and dict(labels)["handler"] == "/verification-emails"
    }
    statuses = {dict(labels)["status"] for labels, value in http.items() if value >= 1}
    assert {"503", "422"} <= statuses
    failed = [
        value
        for (name, labels), value in samples.items()
        if name == "kafka_events_publish_total"
        and dict(labels)["topic"] == "t-metrics"
        and dict(labels)["outcome"] != "delivered"
    ]
    assert sum(failed) >= 1
    assert "/metrics" not in {dict(labels)["handler"] for labels in http}


def _http_count(handler: str, method: str, status: str) -> float:
    labels = {"handler": handler, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def _http_latency_count(handler: str, method: str, status: str) -> float:
    labels = {"handler": handler, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


async def test_http_requests_are_counted_by_route_template_even_when_refused_before_routing(
    client: httpx.AsyncClient,
) -> None:
    cases = [
        ("/verification-emails", "POST", "422"),  # routed
        ("/verification-emails", "POST", "413"),  # answered before routing
        ("/verification-emails", "GET", "405"),  # the path matches, the method not
        ("/events/{event_id}", "GET", "404"),  # a templated route
        ("none", "GET", "404"),  # no route
    ]
    before = [_http_count(*case) for case in cases]
    latency_before = _http_latency_count(*cases[0])

    answers = [
        await client.post("/verification-emails", json={}),
        await client.post("/verification-emails", content=b"x" * 70_000),
        await client.get("/verification-emails"),
        await client.get(f"/events/{uuid.uuid4()}"),
        await client.get("/no-such-page"),
    ]
    await client.get("/metrics")
    await client.get("/no-such/metrics")

    assert [a.status_code for a in answers] == [422, 413, 405, 404, 404]
    assert [_http_count(*case) - b for case, b in zip(cases, before, strict=True)] == [1] * 5
    assert _http_latency_count(*cases[0]) - latency_before == 1
    handlers = {
        s.labels["handler"]
        for family in REGISTRY.collect()
        if family.name == "http_requests"
        for s in family.samples
    }
    assert not {"/metrics", "/no-such/metrics", "/no-such-page"} & handlers


async def test_metrics_can_be_turned_off() -> None:
    settings = make_settings(
        f"127.0.0.1:{closed_port()}", "t-metrics-off", connect_timeout_ms=200
    ).model_copy(update={"metrics": MetricsSettings(enabled=False)})
    async with running_app(settings) as running:
        response = await running.client.get("/metrics")
        spec = (await running.client.get("/openapi.json")).json()

    assert response.status_code == 404
    assert "/metrics" not in spec["paths"]


def test_publisher_states_other_than_ready_read_as_not_ready() -> None:
    publisher = make_publisher(FakeProducer(), metrics=METRICS)
    for state in PublisherState:
        publisher.producer._enter(state)
        expected = 1 if state is PublisherState.READY else 0
        assert sample("kafka_events_producer_ready", policy=POLICY) == expected
