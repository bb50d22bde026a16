"""The SQL message store: SQLite or PostgreSQL, through SQLAlchemy Core (one code path).

SQLite by default (WAL, synchronous=FULL: a record survives a crash once `record()`
returned); PostgreSQL when the URL says so. Every method maps SQLAlchemy's errors to
`StoreError`, once, here.

The outbox in the caller's own transaction: `add_to_outbox(connection, message, policy=...)`
inserts the record through the caller's `AsyncConnection` or `AsyncSession`, so it is
committed, or rolled back, with the caller's business rows. The database must be the one the
store opened (the table is created there by `open()`); the relay publishes the record after
the commit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
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
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kafka_events.errors import StoreError
from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt
from kafka_events.store import lease as leases
from kafka_events.store.base import Lease, Origin, Status, StoredMessage
from kafka_events.store.database import Tables

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


def _pending_values(
    message: OutgoingMessage,
    *,
    record_id: str,
    origin: Origin,
    policy: str,
    attempts: int = 0,
    error_type: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    now = _now()
    return {
        "id": record_id,
        "event_id": message.event_id,
        "origin": origin.value,
        "policy": policy,
        "topic": message.topic,
        "key": message.key,
        "value": message.value,
        "headers": _encode_headers(message.headers),
        "status": Status.PENDING.value,
        "error_type": error_type,
        "error": error,
        "attempts": attempts,
        "replays": 0,
        "created_at": now,
        "first_failed_at": now if error_type else None,
        "last_failed_at": now if error_type else None,
    }


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """SQLAlchemy's errors as `StoreError` (the store's one boundary)."""
    try:
        yield
    except SQLAlchemyError as error:
        raise StoreError(f"the store could not {what}: {type(error).__name__}") from error


class SqlStore(Tables):
    """The message store in a SQL database at `url` (`sqlite+aiosqlite:///<path>` or
    `postgresql+asyncpg://user:password@host/db`). `open()` before use, `close()` after."""

    metadata = metadata
    lock_key = _CREATE_LOCK_KEY

    def lease(self) -> Lease:
        """SQLite file: an `flock` beside it; PostgreSQL: an advisory lock; in memory: held."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "postgresql":
            return leases.AdvisoryLease(self.engine)
        if parsed.database in (None, "", ":memory:"):
            return leases.Held()
        return leases.FileLease(Path(f"{parsed.database}.relay-lock"))

    async def open(self) -> None:
        with _mapped("be opened"):
            await super().open()

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
        record_id = str(uuid.uuid4())
        values = _pending_values(
            message,
            record_id=record_id,
            origin=origin,
            policy=policy,
            attempts=attempts,
            error_type=error_type,
            error=error,
        )
        with _mapped("record the message"):
            async with self.engine.begin() as connection:
                await connection.execute(insert(messages).values(**values))
        stored = await self.get(record_id)
        assert stored is not None
        return stored

    async def add_to_outbox(
        self,
        connection: AsyncConnection | AsyncSession,
        message: OutgoingMessage,
        *,
        policy: str,
        on_commit: Callable[[], None] | None = None,
    ) -> str:
        """Insert `message` as a pending outbox record in the caller's open transaction.

        It becomes visible to the relay when the caller commits (then `on_commit` is called,
        once), and disappears with a rollback. Returns the record id. Errors are the caller's
        database's own (SQLAlchemy), as for the rest of its transaction.
        """
        record_id = str(uuid.uuid4())
        values = _pending_values(message, record_id=record_id, origin=Origin.OUTBOX, policy=policy)
        await connection.execute(insert(messages).values(**values))
        if on_commit is not None:
            if isinstance(connection, AsyncSession):
                sa_event.listen(
                    connection.sync_session, "after_commit", lambda _: on_commit(), once=True
                )
            else:
                sa_event.listen(
                    connection.sync_connection, "commit", lambda _: on_commit(), once=True
                )
        return record_id

    async def get(self, record_id: str) -> StoredMessage | None:
        with _mapped("read a record"):
            async with self.engine.connect() as connection:
                row = (
                    await connection.execute(select(messages).where(messages.c.id == record_id))
                ).first()
        return _row(row) if row is not None else None

    async def find_event(self, event_id: str) -> StoredMessage | None:
        """The newest record of an event."""
        with _mapped("read a record"):
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
        with _mapped("list records"):
            async with self.engine.connect() as connection:
                return [_row(row) for row in await connection.execute(query)]

    async def count(self, status: Status | None = None) -> int:
        query = select(func.count()).select_from(messages)
        if status is not None:
            query = query.where(messages.c.status == status.value)
        with _mapped("count records"):
            async with self.engine.connect() as connection:
                return int((await connection.execute(query)).scalar_one())

    async def mark_delivered(self, record_id: str, receipt: DeliveryReceipt) -> None:
        with _mapped("mark a record delivered"):
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
        with _mapped("mark a record failed"):
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
        with _mapped("requeue records"):
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    update(messages).where(condition).values(status=Status.PENDING.value, replays=0)
                )
        return int(result.rowcount)

    async def purge(self, *, status: Status = Status.DELIVERED) -> int:
        """Delete records of `status` (delivered by default); returns how many."""
        with _mapped("purge records"):
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    delete(messages).where(messages.c.status == status.value)
                )
        return int(result.rowcount)
