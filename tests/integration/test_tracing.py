"""Tracing against a real broker: an HTTP request's trace continues in the Kafka headers and in
the worker's handling of the record, and with tracing off no trace header is written.

The API runs its real lifespan and the worker runs in-process, each with an in-memory span
exporter behind the real batch processor: their spans are read once both stopped (which flushes
them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.config import Settings, SmtpBackend, SmtpSettings, TracingSettings, WorkerSettings
from app.main import create_app
from app.state import AppState
from app.worker.consumer import VerificationEmailWorker
from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic, read_all, read_at
from tests.helpers.service import STARTUP_TIMEOUT_S, make_settings
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify?t=1"}
CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN_ID = 0xB7AD6B7169203331
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"
TRACE_HEADERS = {"traceparent", "tracestate", "baggage"}


def traced_settings(bootstrap: str, topic: str, *, enabled: bool) -> Settings:
    settings = make_settings(bootstrap, topic)
    return settings.model_copy(
        update={
            "tracing": TracingSettings(enabled=enabled),
            "reply": settings.reply.model_copy(update={"topic": f"{topic}.reply"}),
            "smtp": SmtpSettings(backend=SmtpBackend.LOG),
            "worker": WorkerSettings(group_id=f"g-{topic}", dead_letter_topic=f"{topic}.dlq"),
        }
    )


@asynccontextmanager
async def api(
    settings: Settings, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    app = create_app(settings, span_exporter=exporter)
    async with (
        LifespanManager(app, startup_timeout=STARTUP_TIMEOUT_S, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        yield client, manager._state["app"]


@asynccontextmanager
async def worker(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[None]:
    running = VerificationEmailWorker(settings, span_exporter=exporter)
    await running.start()
    try:
        yield
    finally:
        await running.stop()


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def traceparent_of(record: Any) -> str:
    [value] = [v for k, v in record.headers if k == "traceparent"]
    return bytes(value).decode()


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_a_request_trace_continues_through_kafka_into_the_worker_and_its_reply(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name, partitions=1)
    await create_topic(bootstrap, f"{topic}.dlq", partitions=1)
    settings = traced_settings(bootstrap, topic, enabled=True)
    api_spans, worker_spans = InMemorySpanExporter(), InMemorySpanExporter()

    async with worker(settings, worker_spans), api(settings, api_spans) as (client, state):

        async def replies_ready() -> bool:
            return state.replies.ready

        await eventually(replies_ready, timeout_s=30)
        # request-reply: answered once the worker handled the record and replied
        response = await client.post(
            "/verification-emails",
            params={"wait_for": "delivery"},
            json=BODY,
            headers={"traceparent": CALLER_TRACEPARENT},
        )
    # both stopped: every span is exported

    body = response.json()
    assert response.status_code == 200, body
    receipt, event_id = body["receipt"], body["receipt"]["event_id"]
    sent = api_spans.get_finished_spans()
    handled = worker_spans.get_finished_spans()

    # the API: the HTTP server span continues the caller's trace; the publish is a PRODUCER span
    server = only(sent, "POST /verification-emails")
    producer = only(sent, f"send {topic}")
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == CALLER_TRACE_ID
    assert parent_of(server) == CALLER_SPAN_ID
    assert producer.kind is SpanKind.PRODUCER
    assert producer.context.trace_id == CALLER_TRACE_ID
    assert producer.attributes is not None
    assert dict(producer.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
        "messaging.message.id": event_id,
        "messaging.message.body.size": producer.attributes["messaging.message.body.size"],
        "messaging.destination.partition.id": str(receipt["partition"]),
        "messaging.kafka.offset": receipt["offset"],
        "kafka_events.delivery_policy": "replicated",
        "kafka_events.attempts": 1,
    }
    assert server.resource.attributes["service.name"] == "kafka-events"

    # on the wire: the record carries the producer span's context
    record = await read_at(bootstrap, topic, receipt["partition"], receipt["offset"])
    assert traceparent_of(record) == traceparent(producer)

    # the worker: a CONSUMER span in the same trace, a child of the producer span
    process = only(handled, f"process {topic}")
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == server.context.trace_id
    assert parent_of(process) == producer.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.message.id"] == event_id
    assert process.attributes["messaging.kafka.offset"] == receipt["offset"]
    assert process.attributes["messaging.consumer.group.name"] == f"g-{topic}"
    assert process.attributes["verification_email.status"] == "sent"
    assert process.resource.attributes["service.name"] == "kafka-events-worker"
    # ... with the email and the reply as its children
    email = only(handled, "send email")
    reply_span = only(handled, f"send {topic}.reply")
    assert parent_of(email) == parent_of(reply_span) == process.context.span_id
    assert reply_span.kind is SpanKind.PRODUCER
    # and the reply carries the context on
    [reply] = await read_all(bootstrap, f"{topic}.reply", expected=1)
    assert traceparent_of(reply) == traceparent(reply_span)


async def test_with_tracing_off_no_trace_header_is_written(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name, partitions=1)
    spans = InMemorySpanExporter()

    async with api(traced_settings(bootstrap, topic, enabled=False), spans) as (client, _):
        # even a caller's trace context is not passed on
        response = await client.post(
            "/verification-emails", json=BODY, headers={"traceparent": CALLER_TRACEPARENT}
        )

    assert response.status_code == 202, response.text
    receipt = response.json()
    record = await read_at(bootstrap, topic, receipt["partition"], receipt["offset"])
    assert {name for name, _ in record.headers} == {
        "event_id",
        "event_type",
        "content_type",
        "correlation_id",
    }
    assert not {name for name, _ in record.headers} & TRACE_HEADERS
    assert spans.get_finished_spans() == ()
