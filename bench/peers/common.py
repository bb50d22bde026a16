"""What every HTTP peer shares, so that only the way it publishes differs between them.

- The request body is the app's own `VerificationEmailRequest` (same validation cost).
- The Kafka message is the app's own wire format (`VerificationEmailRequested.to_message`):
  key = the email, a JSON value, headers `event_id`, `event_type`, `content_type`.
- The `202` body is `{event_id, topic, partition, offset, timestamp}`.
- `GET /health/ready` answers `200`; uvicorn serves nothing before the lifespan has started
  the producer, so an answer means the peer can publish.
- Settings come from the environment: `BENCH_BOOTSTRAP_SERVERS` (comma-separated
  `host:port`) and `BENCH_TOPIC`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fastapi import FastAPI

from app.verification.events import VerificationEmailRequested
from app.verification.schemas import VerificationEmailRequest
from kafka_events.messages import OutgoingMessage

__all__ = [
    "BOOTSTRAP_ENV",
    "ROUTE",
    "TOPIC_ENV",
    "PeerSettings",
    "VerificationEmailRequest",
    "accepted",
    "add_health_route",
    "to_message",
]

BOOTSTRAP_ENV = "BENCH_BOOTSTRAP_SERVERS"
TOPIC_ENV = "BENCH_TOPIC"
ROUTE = "/verification-emails"


@dataclass(frozen=True, slots=True)
class PeerSettings:
    bootstrap_servers: list[str]
    topic: str

    @classmethod
    def from_env(cls) -> PeerSettings:
        servers = [s.strip() for s in os.environ.get(BOOTSTRAP_ENV, "").split(",") if s.strip()]
        topic = os.environ.get(TOPIC_ENV, "")
        if not servers or not topic:
            raise RuntimeError(f"set {BOOTSTRAP_ENV} and {TOPIC_ENV}")
        return cls(bootstrap_servers=servers, topic=topic)


def to_message(body: VerificationEmailRequest, topic: str) -> OutgoingMessage:
    """The app's wire format for this request (a fresh event id each call)."""
    event = VerificationEmailRequested(email=str(body.email), redirect_url=str(body.redirect_url))
    return event.to_message(topic)


def accepted(
    message: OutgoingMessage, partition: int, offset: int, timestamp: int
) -> dict[str, object]:
    """The body of a `202`."""
    return {
        "event_id": message.event_id,
        "topic": message.topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
    }


def add_health_route(app: FastAPI) -> None:
    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}
