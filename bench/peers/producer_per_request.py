"""Peer (the anti-pattern): a new `AIOKafkaProducer` created, started and stopped per request.

What a handler that builds its client inside the request does. Every request pays for the
bootstrap connection, a metadata request, `InitProducerId` (idempotence) and the close, on
top of the publish itself; the broker sees one new client per request.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from fastapi import FastAPI

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
    app = FastAPI(title="bench peer: producer_per_request")

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(body: VerificationEmailRequest) -> dict[str, object]:
        message = to_message(body, settings.topic)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id="bench-producer-per-request",
            acks=settings.aiokafka_acks,
            enable_idempotence=settings.idempotent,
        )
        await producer.start()
        try:
            metadata = await producer.send_and_wait(
                message.topic, message.value, key=message.key, headers=list(message.headers)
            )
        finally:
            await producer.stop()
        return accepted_record(message, metadata)

    add_health_route(app)
    return app
