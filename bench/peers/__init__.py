"""The HTTP peers: tiny FastAPI apps with the same `POST /verification-emails` contract.

Each is served by uvicorn (one worker) in its own process and publishes to its own topic on
the same broker. `app` is this project's service itself; `http_only` is a baseline without
Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.peers.common import ACKS_ENV, BOOTSTRAP_ENV, TOPIC_ENV

__all__ = ["PEERS", "Peer"]


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    factory: str  # what `uvicorn --factory` loads
    summary: str
    uses_kafka: bool = True
    # False when the peer's client cannot carry the contract's headers (they are left out).
    sends_headers: bool = True
    # Requests per run by concurrency, when the default would take too long.
    requests: tuple[tuple[int, int], ...] = ()

    def env(
        self, bootstrap_servers: str, topic: str, workdir: Path, *, acks: str = "all"
    ) -> dict[str, str]:
        """Environment variables that point the peer at the broker, its topic, its acks level
        (`0`, `1` or `all`; the bench peers only: the app's follows its delivery policy)
        and, for the app, a message store of its own in `workdir` (an absolute path)."""
        if self.name == "app":
            return {
                "KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
                "VERIFICATION__TOPIC": topic,
                "STORE__URL": f"sqlite+aiosqlite:///{workdir / 'app-messages.db'}",
                "API__LOG_LEVEL": "warning",
            }
        return {BOOTSTRAP_ENV: bootstrap_servers, TOPIC_ENV: topic, ACKS_ENV: acks}

    def requests_for(self, concurrency: int, default: int) -> int:
        return dict(self.requests).get(concurrency, default)


PEERS: tuple[Peer, ...] = (
    Peer(
        "app",
        "app.main:create_app",
        "this project with its defaults (`replicated` policy through `KafkaPublisher`, "
        "failure store in a temporary SQLite file, relay on)",
    ),
    Peer("raw_aiokafka", "bench.peers.raw_aiokafka:create_app", "one shared AIOKafkaProducer"),
    Peer(
        "faststream",
        "bench.peers.faststream_kafka:create_app",
        "FastStream's FastAPI integration (`KafkaRouter`)",
    ),
    Peer("confluent", "bench.peers.confluent:create_app", "confluent-kafka Producer + poll thread"),
    Peer(
        "confluent_aio",
        "bench.peers.confluent_aio:create_app",
        "confluent-kafka `AIOProducer` (batch_size=1, a poll task); **without headers**: "
        "AIOProducer refuses them",
        sends_headers=False,
    ),
    Peer(
        "producer_per_request",
        "bench.peers.producer_per_request:create_app",
        "new AIOKafkaProducer per request",
        requests=((1, 200), (32, 400)),
    ),
    Peer(
        "http_only",
        "bench.peers.http_only:create_app",
        "baseline: no Kafka, same validation and message",
        uses_kafka=False,
    ),
)
