"""The application factory and the lifespan that owns every long-lived client.

Run with `python -m app` (validates settings first) or
`uvicorn --factory app.main:create_app`.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import docs, exceptions, logs, metrics, publishing
from app.config import Settings, env_names, load_settings
from app.failures.router import admin_router, events_router
from app.health.router import router as health_router
from app.http_limits import RequestLimits
from app.metrics.router import router as metrics_router
from app.middleware import BodySizeLimit
from app.ratelimit import open_rate_limiter
from app.state import AppState
from app.telemetry import Tracing
from app.verification import hosts
from app.verification.router import router as verification_router
from kafka_events import AccessRefused
from kafka_events.fastapi import lifespan as kafka_lifespan
from kafka_events.idempotency import IdempotencyKeys

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, span_exporter: SpanExporter | None = None
) -> FastAPI:
    """Build the FastAPI application; nothing connects until its lifespan starts.

    `span_exporter` replaces the one `TRACING__EXPORTER` chooses (when tracing is on).
    """
    settings = settings or load_settings()
    if not settings.verification.redirect_hosts:
        logger.warning(hosts.OPEN_WARNING)
    tracing = Tracing(settings.tracing, exporter=span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        # Teardown runs in reverse: the library (relay, producers flushing, store), then tracing.
        async with AsyncExitStack() as stack:
            stack.callback(metrics.process_exited, os.getpid())
            tracing.start()
            stack.push_async_callback(tracing.stop)
            kafka = publishing.kafka_events(settings, tracer=tracing.tracer("kafka_events"))
            try:
                state = await stack.enter_async_context(kafka_lifespan(kafka)(app))
            except AccessRefused as refused:  # named as the environment variables to fix
                raise AccessRefused(env_names(str(refused), ("kafka",))) from None
            limiter = await stack.enter_async_context(open_rate_limiter(settings.rate_limit))
            keys: IdempotencyKeys[object] = IdempotencyKeys(
                "verification-emails",
                window_s=settings.idempotency.window_s,
                max_keys=settings.idempotency.max_keys,
            )
            app_state = AppState(
                settings=settings, kafka=kafka, rate_limiter=limiter, idempotency=keys
            )
            # What start-up made lives as long as the process: out of the collector's walks,
            # each full collection of which would otherwise stop the loop for tens of ms.
            gc.collect()
            gc.freeze()
            stack.callback(gc.unfreeze)  # a lifespan run again (tests) frees what it left
            yield {**state, "app": app_state}
            logger.info("stopping")

    app = FastAPI(
        title=settings.api.title,
        version="0.1.0",
        description=(
            "Publishes verification-email events to Apache Kafka and answers with the "
            "broker's receipt. Every error is JSON `{error, detail}`."
        ),
        lifespan=lifespan,
        telemetry=tracing.http_telemetry(),
        docs_url=None,  # served by app.docs, without a CDN
        redoc_url=None,
    )
    exceptions.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    # outside the body limit, so that its reading of a chunked body is bounded in time too
    app.add_middleware(
        RequestLimits,
        max_header_bytes=settings.server.max_header_bytes,
        max_header_count=settings.server.max_header_count,
        body_timeout_s=settings.server.body_timeout_s,
    )
    if settings.metrics.enabled:
        metrics.instrument(app)
    if settings.api.cors_origin_list:  # outermost, so that 413s carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", logs.CORRELATION_HEADER],
            allow_credentials=False,
            expose_headers=["Retry-After", logs.CORRELATION_HEADER],
        )
    logs.install(app)  # outermost: every response, a 413 or a CORS preflight too, carries it
    app.include_router(verification_router)
    app.include_router(events_router)
    app.include_router(health_router)
    app.include_router(admin_router)
    if settings.metrics.enabled:
        app.include_router(metrics_router)
    # Last: a request is matched against the routes in order (by the router, and again by the
    # HTTP metrics for its route name), and the docs pages are rarely asked for.
    docs.install_docs(app)
    return app
