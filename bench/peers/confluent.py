"""Peer: confluent-kafka's `Producer` (librdkafka) in FastAPI, delivery reports as futures.

One producer per process (`BENCH_ACKS`, default acks=all with enable.idempotence=true;
linger.ms=0), started and flushed by the lifespan; `bench.confluent_bridge` turns each
delivery report into the awaited result of the request (a daemon thread drives `poll()`).
With acks=0 librdkafka reports no offset and the `202` says -1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from bench.confluent_bridge import AsyncConfluentProducer, librdkafka_config
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        producer = AsyncConfluentProducer(
            librdkafka_config(settings.bootstrap_servers, "bench-confluent", acks=settings.acks)
        )
        await producer.start()
        try:
            yield {"producer": producer}
        finally:
            await producer.stop()

    app = FastAPI(title="bench peer: confluent", lifespan=lifespan)

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(
        body: VerificationEmailRequest, request: Request
    ) -> dict[str, object]:
        producer: AsyncConfluentProducer = request.state.producer
        message = to_message(body, settings.topic)
        record = await producer.produce(
            message.topic, message.value, key=message.key, headers=message.headers
        )
        return accepted(message, record.partition, record.offset, record.timestamp)

    add_health_route(app)
    return app
