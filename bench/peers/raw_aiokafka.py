"""Peer: FastAPI with one shared `AIOKafkaProducer`, started and stopped by the lifespan.

Each request awaits `send_and_wait` (`BENCH_ACKS`, default acks=all with idempotence; with
acks=0 aiokafka answers `None` and the `202` has no partition or offset). No deadline, no
error mapping, no receipt model: the difference to the app is the cost of the app's
`KafkaPublisher` facade.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from fastapi import FastAPI, Request

from bench.peers.common import (
    ROUTE,
    PeerSettings,
    VerificationEmailRequest,
    accepted_record,
    add_health_route,
    to_message,
)


def create_app() -> FastAPI:
    settings = PeerSettings.from_env()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id="bench-raw-aiokafka",
            acks=settings.aiokafka_acks,
            enable_idempotence=settings.idempotent,
        )
        await producer.start()
        try:
            yield {"producer": producer}
        finally:
            await producer.stop()

    app = FastAPI(title="bench peer: raw_aiokafka", lifespan=lifespan)

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(
        body: VerificationEmailRequest, request: Request
    ) -> dict[str, object]:
        message = to_message(body, settings.topic)
        metadata = await request.state.producer.send_and_wait(
            message.topic, message.value, key=message.key, headers=list(message.headers)
        )
        return accepted_record(message, metadata)

    add_health_route(app)
    return app
