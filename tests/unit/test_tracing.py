"""Tracing without a broker: the provider's lifecycle, trace context in Kafka headers, the
publisher's PRODUCER span, and a stored message replayed in the trace it was stored with.

The worker's spans and a whole trace (HTTP -> Kafka -> worker -> reply) are tested against a
real broker in tests/integration/test_tracing.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from aiokafka.errors import (  # type: ignore[import-untyped]
    LeaderNotAvailableError,
    TopicAuthorizationFailedError,
)
from opentelemetry import _logs, baggage, context, metrics, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from app.config import (
    PolicyName,
    ReplaySettings,
    Settings,
    SettingsError,
    TracingExporter,
    TracingSettings,
    load_settings,
)
from app.main import create_app
from app.telemetry import Tracing, _configured_exporter
from kafka_events import KafkaConfig, Policy, ProducerConfig, errors
from kafka_events import tracing as kafka_tracing
from kafka_events.delivery import DeliveryService
from kafka_events.messages import OutgoingMessage
from kafka_events.producer import KafkaPublisher
from kafka_events.store import SqlStore, Status
from kafka_events.store.relay import Relay
from tests.helpers.waiting import repo_root
from tests.library.test_publisher import FakeProducer

MESSAGE = OutgoingMessage(
    topic="t", value=b"{}", key=b"k", event_id="e-1", headers=(("event_id", b"e-1"),)
)


class Recorder:
    """A tracer whose finished spans are kept in memory, exported as they end."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def named(self, name: str) -> ReadableSpan:
        [span] = [s for s in self.exporter.get_finished_spans() if s.name == name]
        return span


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.provider.shutdown()


class HeaderKeepingProducer(FakeProducer):
    """A fake producer that keeps the headers of every send, and can run transactions."""

    def __init__(self, **behaviour: Any) -> None:
        super().__init__(**behaviour)
        self.headers: list[list[tuple[str, bytes]]] = []

    async def send(
        self, topic: str, value: bytes | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        self.headers.append(list(options.get("headers") or []))
        return await super().send(topic, value, **options)

    async def begin_transaction(self) -> None:
        return None

    async def commit_transaction(self) -> None:
        return None


def publisher(producer: FakeProducer, tracer: trace.Tracer | None, **policy: Any) -> KafkaPublisher:
    replicated = Policy.model_validate(
        {"acks": "all", "enable_idempotence": True, "retry": {"initial_retry_time_ms": 1}, **policy}
    )
    kafka = KafkaConfig(producer=ProducerConfig(connect_timeout_ms=200, close_timeout_ms=200))
    return KafkaPublisher(kafka, replicated, producer_factory=lambda: producer, tracer=tracer)


def names(headers: Sequence[tuple[str, bytes]]) -> list[str]:
    return [name for name, _ in headers]


def traceparent_of(span: trace.Span | ReadableSpan) -> bytes:
    ids = span.get_span_context()
    assert ids is not None
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}".encode()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# --- the provider's lifecycle -------------------------------------------------------------------


async def test_off_by_default_tracing_hands_out_no_tracer_and_no_http_spans() -> None:
    tracing = Tracing(TracingSettings())

    tracing.start()
    assert not tracing.enabled
    assert tracing.tracer("x") is None
    assert tracing.http_telemetry() == {"tracing": False, "metrics": False, "logs": False}
    await tracing.stop()


@pytest.mark.parametrize("enabled", [False, True])
async def test_a_request_does_not_consult_opentelemetrys_global_providers(
    monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    looked_up: list[str] = []
    for module, name in (
        (metrics, "get_meter_provider"),
        (_logs, "get_logger_provider"),
        (trace, "get_tracer_provider"),
    ):
        monkeypatch.setattr(module, name, lambda name=name: looked_up.append(name))
    settings = Settings(
        _env_file=None, tracing=TracingSettings(enabled=enabled, exporter=TracingExporter.NONE)
    )
    app = create_app(settings)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        answer = await client.get("/no-such-route")

    assert answer.status_code == 404
    assert looked_up == []


def test_off_the_sdk_is_never_loaded() -> None:
    script = (
        "import sys\n"
        "from app.config import Settings\n"
        "from app.main import create_app\n"
        "from app.worker.consumer import VerificationEmailWorker\n"
        "settings = Settings(_env_file=None)\n"
        "create_app(settings)\n"
        "VerificationEmailWorker(settings)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "[]"


async def test_spans_are_exported_when_tracing_stops() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingSettings(enabled=True), service_name="svc", exporter=exporter)
    tracing.start()
    tracer = tracing.tracer("x")
    assert tracer is not None

    with tracer.start_as_current_span("work"):
        pass
    await tracing.stop()
    await tracing.stop()  # harmless

    [span] = exporter.get_finished_spans()
    assert span.name == "work"
    assert span.resource.attributes["service.name"] == "svc"


def test_a_tracer_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="start"):
        Tracing(TracingSettings(enabled=True), exporter=InMemorySpanExporter()).tracer("x")


async def test_a_new_trace_is_sampled_by_ratio_and_a_callers_decision_is_kept() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingSettings(enabled=True, sample_ratio=0.0), exporter=exporter)
    tracing.start()
    tracer = tracing.tracer("x")
    assert tracer is not None
    caller = SpanContext(
        trace_id=1, span_id=2, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )

    with tracer.start_as_current_span("new trace"):
        pass
    with tracer.start_as_current_span(
        "caller's trace", context=trace.set_span_in_context(NonRecordingSpan(caller))
    ):
        pass
    await tracing.stop()

    assert [s.name for s in exporter.get_finished_spans()] == ["caller's trace"]


class _StuckExporter(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


async def test_stop_is_bounded_when_the_collector_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = _StuckExporter()
    tracing = Tracing(TracingSettings(enabled=True, export_timeout_ms=100), exporter=exporter)
    tracing.start()
    tracer = tracing.tracer("x")
    assert tracer is not None
    with tracer.start_as_current_span("work"):
        pass

    started = time.monotonic()
    await tracing.stop()
    elapsed = time.monotonic() - started
    exporter.release.set()

    assert elapsed < 3
    assert "dropped" in caplog.text


def test_the_exporter_setting_picks_the_exporter() -> None:
    otlp = _configured_exporter(
        TracingSettings(otlp_endpoint="http://collector:4318/v1/traces"), "svc"
    )
    console = _configured_exporter(TracingSettings(exporter=TracingExporter.CONSOLE), "svc")

    assert isinstance(otlp, OTLPSpanExporter)
    assert otlp._endpoint == "http://collector:4318/v1/traces"
    assert isinstance(console, ConsoleSpanExporter)
    assert _configured_exporter(TracingSettings(exporter=TracingExporter.NONE), "svc") is None
    otlp.shutdown()  # type: ignore[no-untyped-call]


def test_an_endpoint_that_is_not_a_url_is_named() -> None:
    with pytest.raises(SettingsError, match=r"TRACING__OTLP_ENDPOINT: .*full OTLP/HTTP traces URL"):
        load_settings(_env_file=None, tracing={"otlp_endpoint": "collector:4318"})


# --- trace context in Kafka headers -----------------------------------------------------------


def test_a_span_context_round_trips_through_kafka_headers(recorder: Recorder) -> None:
    with recorder.tracer.start_as_current_span("request") as span:
        headers = kafka_tracing.with_context([("event_id", b"e-1")], span)

    assert headers == (("event_id", b"e-1"), ("traceparent", traceparent_of(span)))
    read = trace.get_current_span(kafka_tracing.extract(headers)).get_span_context()
    written = span.get_span_context()
    assert (read.trace_id, read.span_id) == (written.trace_id, written.span_id)
    assert read.is_remote


def test_writing_a_context_replaces_the_one_a_record_carried(recorder: Recorder) -> None:
    old = [
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", b"vendor=old"),
        ("event_id", b"e-1"),
    ]
    with recorder.tracer.start_as_current_span("replay") as span:
        headers = kafka_tracing.with_context(old, span)

    assert names(headers) == ["event_id", "traceparent"]
    assert dict(headers)["traceparent"] == traceparent_of(span)


def test_the_last_traceparent_of_a_record_is_read_like_any_other_header() -> None:
    first = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    last = b"00-11111111111111111111111111111111-2222222222222222-01"

    read = trace.get_current_span(
        kafka_tracing.extract([("traceparent", first), ("traceparent", last)])
    ).get_span_context()

    assert (read.trace_id, read.span_id) == (0x11111111111111111111111111111111, 0x2222222222222222)


def test_baggage_travels_with_the_trace_context(recorder: Recorder) -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with recorder.tracer.start_as_current_span("request") as span:
            headers = kafka_tracing.with_context([], span)
    finally:
        context.detach(token)

    assert dict(headers)["baggage"] == b"tenant=acme"
    assert baggage.get_baggage("tenant", kafka_tracing.extract(headers)) == "acme"


def test_without_a_span_headers_are_left_as_they_are() -> None:
    headers = [("event_id", b"e-1"), ("traceparent", b"kept as it was")]

    assert kafka_tracing.with_context(headers, trace.INVALID_SPAN) == tuple(headers)


def test_an_unreadable_traceparent_is_no_parent() -> None:
    extracted = kafka_tracing.extract([("traceparent", b"\xff not a traceparent")])

    assert not trace.get_current_span(extracted).get_span_context().is_valid


# --- the publisher's span -----------------------------------------------------------------------


async def test_a_publish_is_a_producer_span_whose_context_the_record_carries(
    recorder: Recorder,
) -> None:
    producer = HeaderKeepingProducer()
    traced = publisher(producer, recorder.tracer)
    await traced.start()

    with recorder.tracer.start_as_current_span("request") as request:
        receipt = await traced.publish(MESSAGE)
    await traced.stop()

    span = recorder.named("send t")
    assert span.kind is SpanKind.PRODUCER
    assert parent_id(span) == request.get_span_context().span_id
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "t",
        "messaging.message.id": "e-1",
        "messaging.message.body.size": 2,
        "messaging.destination.partition.id": str(receipt.partition),
        "messaging.kafka.offset": receipt.offset,
        "kafka_events.delivery_policy": "replicated",
        "kafka_events.attempts": 1,
    }
    assert producer.headers == [[("event_id", b"e-1"), ("traceparent", traceparent_of(span))]]


async def test_retries_stay_in_one_span_and_send_the_same_traceparent(recorder: Recorder) -> None:
    producer = HeaderKeepingProducer(send_errors=[LeaderNotAvailableError()])
    traced = publisher(producer, recorder.tracer)
    await traced.start()

    await traced.publish(MESSAGE)
    await traced.stop()

    [span] = recorder.exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["kafka_events.attempts"] == 2
    assert [dict(h)["traceparent"] for h in producer.headers] == [traceparent_of(span)] * 2


async def test_a_failed_publish_marks_its_span_failed(recorder: Recorder) -> None:
    traced = publisher(
        HeaderKeepingProducer(send_error=TopicAuthorizationFailedError()), recorder.tracer
    )
    await traced.start()

    with pytest.raises(errors.PublishRejected):
        await traced.publish(MESSAGE)
    await traced.stop()

    span = recorder.named("send t")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "TopicAuthorizationFailedError"
    assert "messaging.kafka.offset" not in span.attributes


async def test_a_transaction_is_one_span_whose_context_every_record_carries(
    recorder: Recorder,
) -> None:
    producer = HeaderKeepingProducer()
    traced = publisher(producer, recorder.tracer, transactional_id="tx-1")
    await traced.start()
    second = OutgoingMessage(topic="t", value=b"{}", event_id="e-2")

    await traced.publish_atomically([MESSAGE, second])
    await traced.stop()

    [span] = recorder.exporter.get_finished_spans()
    assert span.name == "send t"
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 2
    assert [dict(h)["traceparent"] for h in producer.headers] == [traceparent_of(span)] * 2


async def test_without_a_tracer_there_is_no_span_and_no_trace_header(recorder: Recorder) -> None:
    producer = HeaderKeepingProducer()
    untraced = publisher(producer, None)
    await untraced.start()

    with recorder.tracer.start_as_current_span("request"):
        await untraced.publish(MESSAGE)
    await untraced.stop()

    assert producer.headers == [[("event_id", b"e-1")]]
    assert [s.name for s in recorder.exporter.get_finished_spans()] == ["request"]


# --- stored messages: the outbox and failed publishes -------------------------------------------


async def test_a_failed_publish_is_stored_with_the_request_context_and_replayed_in_its_trace(
    recorder: Recorder, store: SqlStore
) -> None:
    failing = publisher(
        HeaderKeepingProducer(send_error=TopicAuthorizationFailedError()), recorder.tracer
    )
    await failing.start()
    delivery = DeliveryService({PolicyName.REPLICATED: failing}, store)

    with (
        recorder.tracer.start_as_current_span("request") as request,
        pytest.raises(errors.PublishRejected),
    ):
        await delivery.emit(MESSAGE, policy=PolicyName.REPLICATED)
    await failing.stop()
    [stored] = await store.list(status=Status.PENDING)
    assert dict(stored.headers)["traceparent"] == traceparent_of(request)

    # later, by the relay: no request in progress, yet the replay joins the request's trace
    producer = HeaderKeepingProducer()
    replaying = publisher(producer, recorder.tracer)
    await replaying.start()
    publishers = {p.value: replaying for p in PolicyName}
    result = await Relay(store, publishers, ReplaySettings()).run_round()
    await replaying.stop()

    assert result.delivered == 1
    [failed, replayed] = [s for s in recorder.exporter.get_finished_spans() if s.name == "send t"]
    assert failed.status.status_code is StatusCode.ERROR
    assert replayed.context.trace_id == request.get_span_context().trace_id
    assert parent_id(replayed) == request.get_span_context().span_id
    [sent] = producer.headers
    assert names(sent) == ["event_id", "traceparent"]  # one traceparent: the replay's own
    assert dict(sent)["traceparent"] == traceparent_of(replayed)


async def test_untraced_a_stored_message_carries_no_trace_context(
    recorder: Recorder, store: SqlStore
) -> None:
    failing = publisher(HeaderKeepingProducer(send_error=TopicAuthorizationFailedError()), None)
    await failing.start()
    delivery = DeliveryService({PolicyName.REPLICATED: failing}, store)

    with recorder.tracer.start_as_current_span("request"), pytest.raises(errors.PublishRejected):
        await delivery.emit(MESSAGE, policy=PolicyName.REPLICATED)
    await failing.stop()

    [stored] = await store.list(status=Status.PENDING)
    assert names(stored.headers) == ["event_id"]
