"""Tracing without a broker: the provider's lifecycle and its settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from app.config import (
    SettingsError,
    TracingExporter,
    TracingSettings,
    load_settings,
)
from app.tracing import Tracing, _configured_exporter

# --- the provider's lifecycle -------------------------------------------------------------------


async def test_off_by_default_tracing_hands_out_no_tracer_and_no_http_spans() -> None:
    tracing = Tracing(TracingSettings())

    tracing.start()
    assert not tracing.enabled
    assert tracing.tracer("x") is None
    assert tracing.http_telemetry() == {"tracing": False}
    await tracing.stop()


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
