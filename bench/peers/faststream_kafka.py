"""Peer: FastStream's FastAPI integration, `faststream.kafka.fastapi.KafkaRouter`.

The router owns a `KafkaBroker` (aiokafka underneath) made with the peer's acks level
(`BENCH_ACKS`, default acks=all with idempotence; FastStream's own defaults are aiokafka's,
acks=1 without idempotence). Included in the app with `app.include_router`, its lifespan
(which FastAPI merges into the app's) starts the broker before the app serves and stops it
after. Each request awaits `publisher.publish(...)` of a publisher made with
`router.publisher(topic)`: FastStream's producer awaits aiokafka's `send()` future unless
`no_confirm=True`, so `publish` returns aiokafka's `RecordMetadata` (partition, offset,
timestamp), which the `202` carries; with acks=0 aiokafka resolves that future to `None`, and
so does `publish`.

The module is deprecated in FastStream 0.7 (the integration moved to the separate
`faststream_fastapi` package and is to leave FastStream in 1.0); its import warns about that,
which is silenced here as known.

The value is the same JSON bytes as every other peer sends; FastStream adds two headers of its
own (`content-type`, empty for raw bytes, and a fresh `correlation_id`) next to the contract's
`event_id`, `event_type` and `content_type`.
"""

from __future__ import annotations

import warnings

from fastapi import FastAPI

from bench.peers.common import (
    ROUTE,
    PeerSettings,
    VerificationEmailRequest,
    accepted_record,
    add_health_route,
    to_message,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from faststream.kafka.fastapi import KafkaRouter


def create_app() -> FastAPI:
    settings = PeerSettings.from_env()
    router = KafkaRouter(
        settings.bootstrap_servers,
        client_id="bench-faststream",
        acks=settings.aiokafka_acks,
        enable_idempotence=settings.idempotent,
        schema_url=None,  # no AsyncAPI page: the same routes as every other peer
    )
    publisher = router.publisher(settings.topic)
    app = FastAPI(title="bench peer: faststream")

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(body: VerificationEmailRequest) -> dict[str, object]:
        message = to_message(body, settings.topic)
        metadata = await publisher.publish(
            message.value,
            key=message.key,
            headers={name: value.decode() for name, value in message.headers},
        )
        return accepted_record(message, metadata)

    app.include_router(router)
    add_health_route(app)
    return app
