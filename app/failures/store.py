"""The message store: a durable record of every message Kafka has not yet acknowledged.

Two kinds of records, one table, one relay:
- `failed`: a publish that finally failed; recorded before the client gets its 503.
- `outbox`: a message of an outbox policy; recorded before the client gets its 202.

Statuses::

    pending --(relay publishes it)--> delivered   (partition, offset, timestamp kept)
       |  \\--(max replay attempts)--> abandoned  (kept; replayed by hand)
       \\--(not publishable: too large, rejected)--> abandoned

SQLite by default (WAL, synchronous=FULL: a record survives a crash once `record()`
returned); PostgreSQL when the URL says so. SQLAlchemy Core keeps one code path for both.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)

from app.database import Tables
from app.kafka.messages import OutgoingMessage
from app.kafka.receipts import DeliveryReceipt


class Origin(StrEnum):
    FAILED = "failed"
    OUTBOX = "outbox"


class Status(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    ABANDONED = "abandoned"


metadata = MetaData()

_CREATE_LOCK_KEY = 0x6B61666B615F6D73  # PostgreSQL advisory lock held while creating the table

messages = Table(
    "kafka_messages",
    metadata,
    # creation order (autoincrement on SQLite and PostgreSQL alike), for ordered replay
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("event_id", String(64), nullable=False, index=True),
    Column("origin", String(16), nullable=False),
    Column("policy", String(32), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(128), nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("replays", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("first_failed_at", DateTime(timezone=True), nullable=True),
    Column("last_failed_at", DateTime(timezone=True), nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("partition", Integer, nullable=True),
    # Kafka offsets and timestamps (ms since the epoch) are 64-bit; INTEGER is 32-bit on PostgreSQL
    Column("offset", BigInteger, nullable=True),
    Column("timestamp", BigInteger, nullable=True),
    Index("ix_kafka_messages_status_seq", "status", "seq"),
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    seq: int
    event_id: str
    origin: Origin
    policy: str
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    status: Status
    error_type: str | None
    error: str | None
    attempts: int
    replays: int
    created_at: datetime
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    delivered_at: datetime | None
    partition: int | None
    offset: int | None
    timestamp: int | None

    def to_message(self) -> OutgoingMessage:
        return OutgoingMessage(
            topic=self.topic,
            value=self.value,
            key=self.key,
            headers=self.headers,
            event_id=self.event_id,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return json.dumps([[name, base64.b64encode(value).decode()] for name, value in headers])


def _decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, base64.b64decode(value)) for name, value in json.loads(text))


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        seq=row.seq,
        event_id=row.event_id,
        origin=Origin(row.origin),
        policy=row.policy,
        topic=row.topic,
        key=row.key,
        value=row.value,
        headers=_decode_headers(row.headers),
        status=Status(row.status),
        error_type=row.error_type,
        error=row.error,
        attempts=row.attempts,
        replays=row.replays,
        created_at=_aware(row.created_at) or _now(),
        first_failed_at=_aware(row.first_failed_at),
        last_failed_at=_aware(row.last_failed_at),
        delivered_at=_aware(row.delivered_at),
        partition=row.partition,
        offset=row.offset,
        timestamp=row.timestamp,
    )


class MessageStore(Tables):
    """Async access to the message store. `open()` before use, `close()` after."""

    metadata = metadata
    lock_key = _CREATE_LOCK_KEY

    async def record(
        self,
        message: OutgoingMessage,
        *,
        origin: Origin,
        policy: str,
        attempts: int = 0,
        error_type: str | None = None,
        error: str | None = None,
    ) -> StoredMessage:
        """Store `message` durably (committed when this returns) as pending."""
        now = _now()
        record_id = str(uuid.uuid4())
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(messages).values(
                    id=record_id,
                    event_id=message.event_id,
                    origin=origin.value,
                    policy=policy,
                    topic=message.topic,
                    key=message.key,
                    value=message.value,
                    headers=_encode_headers(message.headers),
                    status=Status.PENDING.value,
                    error_type=error_type,
                    error=error,
                    attempts=attempts,
                    replays=0,
                    created_at=now,
                    first_failed_at=now if error_type else None,
                    last_failed_at=now if error_type else None,
                )
            )
        stored = await self.get(record_id)
        assert stored is not None
        return stored

    async def get(self, record_id: str) -> StoredMessage | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(select(messages).where(messages.c.id == record_id))
            ).first()
        return _row(row) if row is not None else None

    async def find_event(self, event_id: str) -> StoredMessage | None:
        """The newest record of an event."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(messages)
                    .where(messages.c.event_id == event_id)
                    .order_by(messages.c.seq.desc())
                    .limit(1)
                )
            ).first()
        return _row(row) if row is not None else None

    async def list(
        self, *, status: Status | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[StoredMessage]:
        """Records in creation order, optionally of one status, after `after_seq`."""
        query = select(messages).where(messages.c.seq > after_seq)
        if status is not None:
            query = query.where(messages.c.status == status.value)
        query = query.order_by(messages.c.seq).limit(limit)
        async with self.engine.connect() as connection:
            return [_row(row) for row in await connection.execute(query)]

    async def count(self, status: Status | None = None) -> int:
        query = select(func.count()).select_from(messages)
        if status is not None:
            query = query.where(messages.c.status == status.value)
        async with self.engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one())

    async def mark_delivered(self, record_id: str, receipt: DeliveryReceipt) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(messages)
                .where(messages.c.id == record_id)
                .values(
                    status=Status.DELIVERED.value,
                    delivered_at=_now(),
                    partition=receipt.partition,
                    offset=receipt.offset,
                    timestamp=receipt.timestamp,
                )
            )

    async def mark_failed(
        self, record_id: str, *, error_type: str, error: str, abandon: bool
    ) -> None:
        """Count a failed replay; `abandon` stops the automatic replay of this record."""
        now = _now()
        async with self.engine.begin() as connection:
            await connection.execute(
                update(messages)
                .where(messages.c.id == record_id)
                .values(
                    replays=messages.c.replays + 1,
                    error_type=error_type,
                    error=error,
                    first_failed_at=func.coalesce(messages.c.first_failed_at, now),
                    last_failed_at=now,
                    status=(Status.ABANDONED if abandon else Status.PENDING).value,
                )
            )

    async def requeue(self, record_ids: Sequence[str] | None = None) -> int:
        """Make abandoned records (all, or these) pending again; returns how many."""
        condition = messages.c.status == Status.ABANDONED.value
        if record_ids is not None:
            condition = and_(condition, messages.c.id.in_(list(record_ids)))
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(messages).where(condition).values(status=Status.PENDING.value, replays=0)
            )
        return int(result.rowcount)

    async def purge(self, *, status: Status = Status.DELIVERED) -> int:
        """Delete records of `status` (delivered by default); returns how many."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                delete(messages).where(messages.c.status == status.value)
            )
        return int(result.rowcount)
