"""The application factory and the lifespan that owns every long-lived client.

Run with `python -m app` (validates settings first) or
`uvicorn --factory app.main:create_app`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import docs, exceptions, logs, metrics
from app.config import PolicyName, Settings, VerificationSettings, load_settings
from app.events import EventBus
from app.failures.relay import Relay
from app.failures.router import admin_router, events_router
from app.failures.store import MessageStore
from app.health.router import router as health_router
from app.kafka import access
from app.kafka.delivery import DeliveryService
from app.kafka.publisher import KafkaPublisher
from app.kafka.replies import ReplyReader, RequestReply
from app.metrics.router import router as metrics_router
from app.middleware import BodySizeLimit
from app.ratelimit import EmailRateLimiter
from app.state import AppState
from app.tracing import Tracing
from app.verification import listeners as verification_listeners
from app.verification.router import router as verification_router

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
    tracing = Tracing(settings.tracing, exporter=span_exporter)
    # Listeners are registered now; their dependencies are injected when the lifespan starts.
    events = EventBus()
    verification_listeners.register(events)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        # Teardown runs in reverse: relay, then publishers (flushing), the store, then tracing.
        async with AsyncExitStack() as stack:
            stack.callback(metrics.process_exited, os.getpid())
            tracing.start()
            stack.push_async_callback(tracing.stop)
            store = MessageStore(settings.store.url)
            await store.open()
            relays: list[Relay] = []

            async def close_store() -> None:
                for relay in relays:  # late acknowledgements from the publishers' last flush
                    await relay.settle_late()
                await store.close()

            stack.push_async_callback(close_store)
            tracer = tracing.tracer("app.kafka.publisher")
            publishers = {
                policy: KafkaPublisher(settings.kafka, policy, tracer=tracer)
                for policy in PolicyName
            }
            for publisher in publishers.values():
                stack.push_async_callback(publisher.stop)
            # Concurrently: each step is bounded by connect_timeout_ms. Brokers that refuse us
            # (credentials, TLS trust, ACLs) stop the start-up; brokers that do not answer don't.
            outcomes = await asyncio.gather(
                access.check(settings.kafka, client_id=settings.kafka.producer.client_id),
                *(p.start() for p in publishers.values()),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            relay = Relay(store, publishers, settings.replay)
            relays.append(relay)
            if settings.replay.enabled:
                relay.start()
                stack.push_async_callback(relay.stop)
            delivery = DeliveryService(
                publishers, store, on_recorded=relay.wake, on_in_flight=relay.track
            )
            replies = ReplyReader(settings.kafka, settings.reply)
            replies.start()  # in the background: request-reply waits for it, emit does not
            stack.push_async_callback(replies.stop)
            providers: dict[type, object] = {
                Settings: settings,
                VerificationSettings: settings.verification,
                DeliveryService: delivery,
                MessageStore: store,
                RequestReply: RequestReply(delivery, replies, settings.reply.timeout_ms),
            }
            events.start(providers)
            stack.callback(events.stop)
            logger.info(
                "started: publishers %s; relay %s",
                ", ".join(f"{p.name}={p.state.value}" for p in publishers.values()),
                "on" if settings.replay.enabled else "off",
            )
            yield {
                "app": AppState(
                    settings=settings,
                    publishers=publishers,
                    store=store,
                    relay=relay,
                    delivery=delivery,
                    events=events,
                    replies=replies,
                    rate_limiter=(
                        EmailRateLimiter(settings.rate_limit)
                        if settings.rate_limit.enabled
                        else None
                    ),
                )
            }
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
