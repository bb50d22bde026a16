"""Baseline peer without Kafka: validates the body, builds the message, answers `202`.

Not a competitor: it shows what FastAPI, uvicorn and the load generator cost on their own on
this machine, i.e. the ceiling every Kafka peer is measured under.
"""

from __future__ import annotations

from fastapi import FastAPI

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
    app = FastAPI(title="bench peer: http_only")
    offset = 0

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(body: VerificationEmailRequest) -> dict[str, object]:
        nonlocal offset
        message = to_message(body, settings.topic)
        offset += 1
        return accepted(message, partition=0, offset=offset, timestamp=0)

    add_health_route(app)
    return app
