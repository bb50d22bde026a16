"""Peer: confluent-kafka's own asyncio producer, `confluent_kafka.aio.AIOProducer` (2.16).

Same producer settings as the `confluent` peer (`BENCH_ACKS`, default acks=all with
enable.idempotence=true; linger.ms=0), one producer per process made and closed by the
lifespan. What differs is who drives librdkafka:

- `AIOProducer.produce()` puts the record in a Python-side buffer and hands the buffer to
  librdkafka (`produce_batch`, then `poll(0)`, on a worker of its thread pool) once
  `batch_size` records wait or after `buffer_timeout` seconds without a new record. Its
  defaults (1000 records, 1 s) would hold a lone request for a second or more, so the peer
  sets `batch_size=1`: every record goes to librdkafka at once, one thread-pool hop per
  request. The inactivity timer is then useless and is off (`buffer_timeout=0`).
- It returns an `asyncio.Future` that librdkafka's delivery report resolves, but delivery
  reports are served only by a `poll()`/`flush()` call, and the only ones it makes itself are
  the `poll(0)` right after each `produce_batch` (too early for that batch's own report) and
  the inactivity timer's. So the lifespan runs one task that awaits `producer.poll(0.1)` in a
  loop (one worker of the pool of 4 blocks there). The delivery callback sets the future's
  result from that worker thread, not from the event loop; the loop wakes when the `poll`
  call's own result comes back through `run_in_executor`.
- Headers: `AIOProducer.produce()` refuses them (`NotImplementedError`, "Headers are not
  supported in AIOProducer batch mode", `produce_batch` takes none). This peer therefore
  publishes the contract's key (the email) and JSON value **without** the `event_id`,
  `event_type` and `content_type` headers: its figures are for a slightly smaller record and
  a weaker contract than the other peers'.

The `202` carries librdkafka's delivery report: partition, offset (`null` with acks=0,
where librdkafka has none) and timestamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from confluent_kafka import Message
from confluent_kafka.aio import AIOProducer
from fastapi import FastAPI, Request

from bench.confluent_bridge import librdkafka_config
from bench.peers.common import (
    ROUTE,
    PeerSettings,
    VerificationEmailRequest,
    accepted,
    add_health_route,
    to_message,
)

_POLL_S = 0.1
_START_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 10.0


async def _serve_delivery_reports(producer: AIOProducer, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        await producer.poll(_POLL_S)


def create_app() -> FastAPI:
    settings = PeerSettings.from_env()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        producer = AIOProducer(
            librdkafka_config(
                settings.bootstrap_servers, "bench-confluent-aio", acks=settings.acks
            ),
            batch_size=1,
            buffer_timeout=0,
        )
        stopping = asyncio.Event()
        poller: asyncio.Task[None] | None = None
        try:
            # Fail the start, not the first publish, when no broker answers.
            await producer.list_topics(timeout=_START_TIMEOUT_S)
            poller = asyncio.create_task(_serve_delivery_reports(producer, stopping))
            yield {"producer": producer}
        finally:
            stopping.set()
            if poller is not None:
                with suppress(asyncio.CancelledError):
                    await poller
            await producer.flush(_CLOSE_TIMEOUT_S)
            await producer.close()

    app = FastAPI(title="bench peer: confluent_aio", lifespan=lifespan)

    @app.post(ROUTE, status_code=202)
    async def create_verification_email(
        body: VerificationEmailRequest, request: Request
    ) -> dict[str, object]:
        producer: AIOProducer = request.state.producer
        message = to_message(body, settings.topic)
        # No headers: AIOProducer refuses them (see the module's docstring).
        delivery = await producer.produce(message.topic, value=message.value, key=message.key)
        record: Message = await delivery
        return accepted(message, record.partition(), record.offset(), record.timestamp()[1])

    add_health_route(app)
    return app
