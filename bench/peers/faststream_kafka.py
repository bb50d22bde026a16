"""Peer: FastStream's Kafka integration (`faststream[kafka]`, aiokafka underneath) in FastAPI.

A `KafkaBroker` (acks=all, idempotent: FastStream's defaults are aiokafka's, acks=1 without
idempotence) is connected and closed by the FastAPI lifespan; each request awaits
`publisher.publish(...)` of a publisher object made with `broker.publisher(topic)`, which
waits for the broker's answer and returns aiokafka's `RecordMetadata` (offset included).

`faststream.kafka.fastapi.KafkaRouter` would do the same publishing through the same broker
object, but that module is deprecated in FastStream 0.7 (it moved to the separate
`faststream_fastapi` package), so the broker is wired into the lifespan by hand.

The value is the same JSON bytes as every other peer sends; FastStream adds two headers of its
own (`content-type`, empty for raw bytes, and a fresh `correlation_id`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from bench.peers.common import (
    ROUTE,
    PeerSettings,
    VerificationEmailRequest,
    accepted,
    add_health_route,
    to_message,
)


def create_app() -> FastAPI:
    settings = PeerSettings.from_env()
    broker = KafkaBroker(
        settings.bootstrap_servers,
        client_id="bench-faststream",
        acks="all",
        enable_idempotence=True,
    )
    publisher = broker.publisher(settings.topic)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()

    app = FastAPI(title="bench peer: faststream", lifespan=lifespan)

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(body: VerificationEmailRequest) -> dict[str, object]:
        message = to_message(body, settings.topic)
        metadata = await publisher.publish(
            message.value,
            key=message.key,
            headers={name: value.decode() for name, value in message.headers},
        )
        return accepted(message, metadata.partition, metadata.offset, metadata.timestamp)

    add_health_route(app)
    return app
