"""What every HTTP peer shares, so that only the way it publishes differs between them.

- The request body is the app's own `VerificationEmailRequest` (same validation cost).
- The Kafka message is the app's own wire format (`VerificationEmailRequested.to_message`):
  key = the email, a JSON value, headers `event_id`, `event_type`, `content_type`.
- The `202` body is `{event_id, topic, partition, offset, timestamp}`.
- `GET /health/ready` answers `200`; uvicorn serves nothing before the lifespan has started
  the producer, so an answer means the peer can publish.
- Settings come from the environment: `BENCH_BOOTSTRAP_SERVERS` (comma-separated
  `host:port`), `BENCH_TOPIC` and `BENCH_ACKS` (`0`, `1` or `all`, default `all`; the
  producer is idempotent only with `all`, which idempotence requires). With acks=0 the broker
  sends no answer, so the `202` carries what the client reports then (aiokafka: no record
  metadata at all, so partition, offset and timestamp are null; librdkafka: the partition,
  offset -1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Protocol

from fastapi import FastAPI

from app.verification.events import VerificationEmailRequested
from app.verification.schemas import VerificationEmailRequest
from kafka_events.messages import OutgoingMessage

__all__ = [
    "ACKS_ENV",
    "BOOTSTRAP_ENV",
    "ROUTE",
    "TOPIC_ENV",
    "Acks",
    "PeerSettings",
    "VerificationEmailRequest",
    "accepted",
    "accepted_record",
    "add_health_route",
    "to_message",
]

BOOTSTRAP_ENV = "BENCH_BOOTSTRAP_SERVERS"
TOPIC_ENV = "BENCH_TOPIC"
ACKS_ENV = "BENCH_ACKS"
ROUTE = "/verification-emails"


Acks = Literal["0", "1", "all"]
_ACKS: tuple[Acks, ...] = ("0", "1", "all")


@dataclass(frozen=True, slots=True)
class PeerSettings:
    bootstrap_servers: list[str]
    topic: str
    acks: Acks = "all"

    @classmethod
    def from_env(cls) -> PeerSettings:
        servers = [s.strip() for s in os.environ.get(BOOTSTRAP_ENV, "").split(",") if s.strip()]
        topic = os.environ.get(TOPIC_ENV, "")
        if not servers or not topic:
            raise RuntimeError(f"set {BOOTSTRAP_ENV} and {TOPIC_ENV}")
        acks = os.environ.get(ACKS_ENV, "all").strip().lower() or "all"
        if acks == "-1":
            acks = "all"
        for level in _ACKS:
            if acks == level:
                return cls(bootstrap_servers=servers, topic=topic, acks=level)
        raise RuntimeError(f"{ACKS_ENV} must be 0, 1 or all, not {acks!r}")

    @property
    def idempotent(self) -> bool:
        """Idempotence needs acks=all, so it is on exactly then."""
        return self.acks == "all"

    @property
    def aiokafka_acks(self) -> int | str:
        """The level as aiokafka (and FastStream) take it: 0, 1 or "all"."""
        return "all" if self.acks == "all" else int(self.acks)


def to_message(body: VerificationEmailRequest, topic: str) -> OutgoingMessage:
    """The app's wire format for this request (a fresh event id each call)."""
    event = VerificationEmailRequested(email=str(body.email), redirect_url=str(body.redirect_url))
    return event.to_message(topic)


def accepted(
    message: OutgoingMessage, partition: int | None, offset: int | None, timestamp: int | None
) -> dict[str, object]:
    """The body of a `202`, with the client's record metadata as it gave it."""
    return {
        "event_id": message.event_id,
        "topic": message.topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
    }


class RecordMetadata(Protocol):
    """Where the broker put a record, as aiokafka's `RecordMetadata` has it."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


def accepted_record(message: OutgoingMessage, record: RecordMetadata | None) -> dict[str, object]:
    """The body of a `202` from aiokafka's answer, which is `None` with acks=0."""
    if record is None:
        return accepted(message, None, None, None)
    return accepted(message, record.partition, record.offset, record.timestamp)


def add_health_route(app: FastAPI) -> None:
    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}
