"""Optional OpenTelemetry tracing: the tracer provider of one process, and its lifecycle.

Off by default (`TRACING__ENABLED`). Off, the SDK is not even imported and no request does any
tracing work: FastAPI's own telemetry is told not to trace (nor to meter or log, which it
does with OpenTelemetry's global providers when any is set), and the publisher and the worker
get no tracer (`tracer()` is None), so they make no span and write no trace header.

On, `start()` (called by the API's lifespan and by the worker's start) creates the SDK's
`TracerProvider`:
- resource `service.name` = `TRACING__SERVICE_NAME` (the worker's with `-worker` appended);
- a parent-based sampler: a trace a caller began keeps the caller's decision; a new one is
  recorded with probability `TRACING__SAMPLE_RATIO`;
- a batch span processor: spans are exported by a background thread, never in the event loop,
  to OTLP over HTTP/protobuf (`TRACING__OTLP_ENDPOINT`), the console, or nowhere (`none`:
  spans are still made, so trace context still reaches the Kafka headers).

`stop()` exports what is buffered and shuts the provider down, within
`TRACING__EXPORT_TIMEOUT_MS` (plus a second); spans not exported by then are dropped, and that
is logged. Tracing never delays the shutdown beyond that, nor fails a request.

No global provider is set: each app (tests build several in one process) and each worker owns
its own, and hands tracers to its components. The OTLP exporter also honours the standard
`OTEL_EXPORTER_OTLP_*` variables this module does not set (headers, certificates).

HTTP server spans are FastAPI's own (`FastAPI(telemetry=...)`, see `http_telemetry()`): one
SERVER span per request, named after the route, continuing a caller's `traceparent`. The Kafka
spans and headers are in `kafka_events.tracing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.util.types import Attributes

from app.config import TracingExporter, TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

_APP_VERSION = "0.1.0"


class _LifespanTracerProvider(trace.TracerProvider):
    """The provider FastAPI is given when the app is built, before the lifespan made the SDK's.

    FastAPI asks for its tracer at the first request, after start-up, and keeps it (so an app
    gets HTTP spans in its first lifespan only; an app runs one). Before `start()` the tracer is
    a no-op; after `stop()` its spans are dropped.
    """

    def __init__(self) -> None:
        self.sdk: TracerProvider | None = None

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace.Tracer:
        if self.sdk is None:
            return trace.NoOpTracer()
        return self.sdk.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )


class Tracing:
    """The tracer provider of one process: `start()`, hand out `tracer()`s, then `stop()`.

    Args:
        settings: the `TRACING__*` settings.
        service_name: `service.name` of the spans; `settings.service_name` when omitted.
        exporter: replaces the exporter the settings choose (tests pass an in-memory one).
    """

    def __init__(
        self,
        settings: TracingSettings,
        *,
        service_name: str | None = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        self._settings = settings
        self._service_name = service_name or settings.service_name
        self._exporter = exporter
        self._provider = _LifespanTracerProvider()

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    def http_telemetry(self) -> TelemetryConfig:
        """FastAPI's telemetry options: HTTP server spans from this provider, or none when off."""
        # FastAPI's OpenTelemetry metrics and logs stay off either way: the service's HTTP
        # metrics are Prometheus's (`/metrics`), and with them off a request does not look up
        # the global meter and logger providers (two lookups, ~25 µs a request).
        if not self.enabled:
            return {"tracing": False, "metrics": False, "logs": False}
        return {"tracing": True, "tracer_provider": self._provider, "metrics": False, "logs": False}

    def tracer(self, name: str) -> trace.Tracer | None:
        """A tracer for the component `name`, or None when tracing is off (trace nothing).

        Raises:
            RuntimeError: tracing is on but not started (its tracers would record nothing).
        """
        if not self.enabled:
            return None
        if self._provider.sdk is None:
            raise RuntimeError("Tracing.tracer() is available between start() and stop()")
        return self._provider.get_tracer(name, _APP_VERSION)

    def start(self) -> None:
        """Create the SDK provider and its exporter (no I/O yet). Does nothing when off."""
        if not self.enabled or self._provider.sdk is not None:
            return
        # Imported here, not at the top: with tracing off the SDK and the exporter (protobuf)
        # are never loaded.
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        settings = self._settings
        provider = TracerProvider(
            resource=Resource.create(
                {SERVICE_NAME: self._service_name, SERVICE_VERSION: _APP_VERSION}
            ),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            shutdown_on_exit=False,  # stop() does it, bounded
        )
        exporter = self._exporter or _configured_exporter(settings, self._service_name)
        if exporter is not None:
            provider.add_span_processor(
                BatchSpanProcessor(exporter, export_timeout_millis=settings.export_timeout_ms)
            )
        self._provider.sdk = provider
        logger.info(
            "tracing on: service %s, exporter %s%s, sample ratio %s",
            self._service_name,
            "custom" if self._exporter is not None else settings.exporter.value,
            f" to {settings.otlp_endpoint}"
            if self._exporter is None and settings.exporter is TracingExporter.OTLP
            else "",
            settings.sample_ratio,
        )

    async def stop(self) -> None:
        """Export the buffered spans and shut down, within EXPORT_TIMEOUT_MS (+1 s). Idempotent."""
        provider, self._provider.sdk = self._provider.sdk, None
        if provider is None:
            return
        limit_s = self._settings.export_timeout_ms / 1000 + 1
        if await _in_thread(provider.shutdown, limit_s, name="tracing-shutdown"):
            logger.info("tracing stopped")
        else:
            logger.warning(
                "tracing: spans not exported within %d ms of shutdown were dropped",
                self._settings.export_timeout_ms,
            )


def _configured_exporter(settings: TracingSettings, service_name: str) -> SpanExporter | None:
    if settings.exporter is TracingExporter.OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=settings.otlp_endpoint, timeout=settings.export_timeout_ms / 1000
        )
    if settings.exporter is TracingExporter.CONSOLE:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=service_name)
    return None


async def _in_thread(step: Callable[[], object], limit_s: float, *, name: str) -> bool:
    """Run the blocking `step` on a thread of its own; True if it ended within `limit_s`.

    A daemon thread, not the loop's executor: one that overruns is left behind without
    holding up the loop's (or the interpreter's) exit.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def finish(ok: bool) -> None:
        if not done.done():
            done.set_result(ok)

    def run() -> None:
        ok = True
        try:
            step()
        except Exception:  # a failed export must not fail the shutdown
            logger.warning("%s failed", name, exc_info=True)
            ok = False
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(finish, ok)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        async with asyncio.timeout(limit_s):
            return await done
    except TimeoutError:
        return False
