"""The contenders of `make bench`: every way of serving `POST /verification-emails` that is
compared, and how each is started for a given broker, topic, acks level and process count.

- `app`: this service as it runs in production: `python -m app` (uvicorn on httptools with the
  edge limits of `app.server`, uvloop, one process per `API__WORKERS`), its defaults
  otherwise; the policy is the one of the acks level (`replicated`, `leader`,
  `fire_and_forget`), the failure store a SQLite file (touched only on a failure).
- `app_reply`: the same service with its worker, request-reply (`?wait_for=delivery`).
- `nest_emit`, `nest_send`, `kafkajs`: the seed's Node stack (`bench/peers/node`).
- `faststream`, `raw_aiokafka`, `confluent`, `confluent_aio`, `producer_per_request`,
  `http_only`: FastAPI apps under plain uvicorn (`bench/peers`).

Every contender reads the same settings: the broker, its topic, the acks level (idempotence
with acks=all only) and the number of server processes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.harness import HOST
from bench.processes import Launch

__all__ = ["CONTENDERS", "Contender", "by_name"]

ROUTE = "/verification-emails"
APP_POLICY = {"0": "fire_and_forget", "1": "leader", "all": "replicated"}

Kind = Literal["app", "app_reply", "uvicorn", "node"]


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    summary: str
    kind: Kind
    target: str = ""  # the uvicorn factory, or the Node peer's mode
    style: Literal["emit", "request-reply", "none"] = "emit"
    # How much slower than the others it is: its request counts are divided by this.
    slowness: int = 1
    # Its closed-loop (C > 1) runs last the plan's duration divided by this, so that a slow
    # contender does not stretch every round.
    closed_duration_divisor: int = 1
    acks_levels: tuple[str, ...] = ("0", "1", "all")
    group: Literal["peer", "ceiling", "ours", "mistake"] = "peer"
    notes: tuple[str, ...] = field(default=())

    @property
    def path(self) -> str:
        return f"{ROUTE}?wait_for=delivery" if self.kind == "app_reply" else ROUTE

    @property
    def expected_status(self) -> int:
        return 200 if self.style == "request-reply" else 202

    @property
    def uses_kafka(self) -> bool:
        return self.style != "none"

    @property
    def reply_topic_suffix(self) -> str | None:
        return ".reply" if self.style == "request-reply" else None

    def launches(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        acks: str,
        workers: int,
        port: int,
        scratch: Path,
    ) -> list[Launch]:
        """The processes to start, the server's first (the one that listens on `port`)."""
        bench = {
            "BENCH_BOOTSTRAP_SERVERS": bootstrap_servers,
            "BENCH_TOPIC": topic,
            "BENCH_ACKS": acks,
            "BENCH_HOST": HOST,
            "BENCH_PORT": str(port),
            "BENCH_WORKERS": str(workers),
        }
        if self.kind in ("app", "app_reply"):
            return self._app_launches(bootstrap_servers, topic, acks, workers, port, scratch)
        if self.kind == "node":
            from bench.peers import node_peers

            env = {**bench, "NODE_ENV": "production"}
            return [Launch(node_peers.command(self.target), env, self.name)]
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            self.target,
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "10",
        ]
        return [Launch(argv, bench, self.name)]

    def _app_launches(
        self, bootstrap_servers: str, topic: str, acks: str, workers: int, port: int, scratch: Path
    ) -> list[Launch]:
        store = scratch / f"{self.name}-{port}.db"
        env = {
            "API__HOST": HOST,
            "API__PORT": str(port),
            "API__WORKERS": str(workers),
            "API__LOG_LEVEL": "warning",  # no access-log line per request, as for every peer
            "KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
            "VERIFICATION__TOPIC": topic,
            "VERIFICATION__POLICY": APP_POLICY[acks],
            "STORE__URL": f"sqlite+aiosqlite:///{store}",  # four slashes: an absolute path
            "REPLY__TOPIC": f"{topic}.reply",
            "SMTP__BACKEND": "log",
            "WORKER__LOG_LEVEL": "warning",
            "WORKER__GROUP_ID": f"{topic}.worker",
        }
        launches = [Launch([sys.executable, "-m", "app"], env, self.name)]
        if self.kind == "app_reply":
            launches.append(
                Launch([sys.executable, "-m", "app.worker"], env, f"{self.name}-worker")
            )
        return launches


CONTENDERS: tuple[Contender, ...] = (
    Contender(
        "app",
        "this service: `python -m app` (uvicorn + httptools + uvloop, edge limits, rate limit, "
        "metrics, idempotency keys), `KafkaPublisher` with the acks level's policy",
        "app",
        group="ours",
    ),
    Contender(
        "nest_emit",
        "NestJS 11 + Express, `@nestjs/microservices` ClientKafka `emit`, awaited for its "
        "record metadata",
        "node",
        "nest_emit",
    ),
    Contender(
        "kafkajs",
        "NestJS 11 + Express, a raw kafkajs producer injected through `useFactory` (awaits "
        "`connect()`)",
        "node",
        "kafkajs",
    ),
    Contender(
        "faststream",
        "FastAPI + FastStream's `KafkaRouter` (adds its `content-type` and `correlation_id` "
        "headers)",
        "uvicorn",
        "bench.peers.faststream_kafka:create_app",
    ),
    Contender(
        "raw_aiokafka",
        "FastAPI + one shared `AIOKafkaProducer`, `send_and_wait` per request",
        "uvicorn",
        "bench.peers.raw_aiokafka:create_app",
    ),
    Contender(
        "confluent",
        "FastAPI + confluent-kafka `Producer`, a poll thread bridging delivery reports",
        "uvicorn",
        "bench.peers.confluent:create_app",
    ),
    Contender(
        "confluent_aio",
        "FastAPI + confluent-kafka's asyncio `AIOProducer` (2.16 refuses headers: key and "
        "value only), `batch_size=1`, a task polling delivery reports",
        "uvicorn",
        "bench.peers.confluent_aio:create_app",
    ),
    Contender(
        "producer_per_request",
        "FastAPI + a new `AIOKafkaProducer` started and stopped in every request (the mistake)",
        "uvicorn",
        "bench.peers.producer_per_request:create_app",
        slowness=5,
        closed_duration_divisor=2,
        group="mistake",
    ),
    Contender(
        "http_only",
        "the HTTP ceiling: FastAPI, the same validation and message, no Kafka",
        "uvicorn",
        "bench.peers.http_only:create_app",
        style="none",
        acks_levels=("all",),
        group="ceiling",
    ),
    Contender(
        "app_reply",
        "this service request-reply: `?wait_for=delivery`, answered once its worker "
        "(`python -m app.worker`, SMTP__BACKEND=log) replied over the reply topic",
        "app_reply",
        style="request-reply",
        acks_levels=("all",),
        group="ours",
    ),
    Contender(
        "nest_send",
        "NestJS ClientKafka `send` (request-reply, `subscribeToResponseOf`), answered by a "
        "replying Nest microservice",
        "node",
        "nest_send",
        style="request-reply",
        acks_levels=("all",),
    ),
)


def by_name(names: tuple[str, ...] | list[str]) -> tuple[Contender, ...]:
    known = {c.name: c for c in CONTENDERS}
    return tuple(known[name] for name in names)
