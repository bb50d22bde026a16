"""The application factory and the lifespan that owns every long-lived client.

Run with `python -m app` (validates settings first) or
`uvicorn --factory app.main:create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from app import exceptions
from app.config import Settings, load_settings
from app.health.router import router as health_router
from app.kafka.publisher import KafkaPublisher
from app.middleware import BodySizeLimit
from app.state import AppState
from app.verification.router import router as verification_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application; nothing connects until its lifespan starts."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        async with AsyncExitStack() as stack:
            publisher = KafkaPublisher(settings.kafka)
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            logger.info("started (publisher %s)", publisher.state.value)
            yield {"app": AppState(settings=settings, publisher=publisher)}
            logger.info("stopping")

    app = FastAPI(
        title=settings.api.title,
        version="0.1.0",
        description=(
            "Publishes verification-email events to Apache Kafka and answers with the "
            "broker's receipt. Every error is JSON `{error, detail}`."
        ),
        lifespan=lifespan,
    )
    exceptions.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    app.include_router(verification_router)
    app.include_router(health_router)
    return app
