"""The verification-email worker for tests: its topics and settings, running it in-process,
writing its input records and reading back what it committed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaProducer,
)
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from app.config import Settings, SmtpBackend, SmtpSettings, WorkerSettings
from app.verification.events import VerificationEmailRequested
from app.worker.consumer import VerificationEmailWorker
from tests.helpers.kafka import create_topic
from tests.helpers.kafka import record_count as record_count  # used by the worker's tests
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually

LINK = "https://app.example.com/verify?token=abc123"


@dataclass(frozen=True)
class Topics:
    source: str
    dead_letters: str
    group: str


async def create_topics(bootstrap: str, name: str) -> Topics:
    """A one-partition source topic `name`, its dead-letter topic, and a group name."""
    await create_topic(bootstrap, name, partitions=1)
    await create_topic(bootstrap, f"{name}.dlq", partitions=1)
    return Topics(name, f"{name}.dlq", f"g-{name}")


def worker_settings(
    bootstrap: str,
    topics: Topics,
    smtp_port: int,
    *,
    store_url: str | None = None,
    group: str | None = None,
    smtp: dict[str, Any] | None = None,
    **worker: Any,
) -> Settings:
    """Settings of a worker on `topics`, sending through 127.0.0.1:`smtp_port`; `smtp` and
    `worker` override SMTP__* and WORKER__* fields."""
    base = make_settings(bootstrap, topics.source, store_url=store_url)
    return base.model_copy(
        update={
            "smtp": SmtpSettings.model_validate(
                {
                    "backend": SmtpBackend.SMTP,
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "timeout_ms": 5000,
                    **(smtp or {}),
                }
            ),
            "worker": WorkerSettings.model_validate(
                {
                    "group_id": group or topics.group,
                    "dead_letter_topic": topics.dead_letters,
                    "max_attempts": 3,
                    "backoff_initial_ms": 50,
                    "backoff_max_ms": 200,
                    "produce_timeout_ms": 10000,
                    **worker,
                }
            ),
        }
    )


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[VerificationEmailWorker]:
    worker = VerificationEmailWorker(settings)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def event(address: str = "ada@example.com", **fields: Any) -> VerificationEmailRequested:
    return VerificationEmailRequested(email=address, redirect_url=LINK, **fields)


def reply_headers(
    reply_topic: str, correlation_id: bytes, partition: int | None = None
) -> list[tuple[str, bytes]]:
    headers = [("kafka_replyTopic", reply_topic.encode()), ("kafka_correlationId", correlation_id)]
    if partition is not None:
        headers.append(("kafka_replyPartition", str(partition).encode()))
    return headers


async def publish(
    bootstrap: str,
    topic: str,
    *records: tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]],
) -> None:
    """Publish (key, value, headers) records in order, each acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=list(headers))
    finally:
        await producer.stop()


def as_record(
    requested: VerificationEmailRequested,
    topic: str,
    extra_headers: Sequence[tuple[str, bytes]] = (),
    *,
    correlation_id: str | None = None,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    message = requested.to_message(topic, correlation_id=correlation_id)
    return message.key, message.value, [*message.headers, *extra_headers]


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets on `topic`, summed over its partitions (0 if none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def wait_committed(bootstrap: str, group: str, topic: str, expected: int) -> None:
    async def done() -> bool:
        return await committed(bootstrap, group, topic) >= expected

    await eventually(done, timeout_s=30, interval_s=0.2)


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers)
