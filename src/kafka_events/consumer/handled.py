"""The events a consumer has handled, by event id: durable deduplication across restarts.

One table, `handled_events`, in a SQL database: SQLite (WAL, synchronous=FULL: a row
survives a crash once `record()` returned) or PostgreSQL; SQLAlchemy Core keeps one code path
for both. A handler writes the row once its side effect is done (the email went out): a crash
between the two repeats the side effect on restart (at least once), and never loses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from kafka_events.store.database import Tables

metadata = MetaData()

# PostgreSQL advisory lock held while creating the table (consumers starting together)
_CREATE_LOCK_KEY = 0x6B61666B615F6865

handled_events = Table(
    "handled_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    # Kafka offsets are 64-bit; INTEGER is 32-bit on PostgreSQL
    Column("offset", BigInteger, nullable=False),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class HandledEvent:
    event_id: str
    status: str
    topic: str
    partition: int
    offset: int
    handled_at: datetime


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything stored here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class HandledEvents(Tables):
    """Async access to `handled_events`. `open()` before use, `close()` after."""

    metadata = metadata
    lock_key = _CREATE_LOCK_KEY

    async def get(self, event_id: str) -> HandledEvent | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(handled_events).where(handled_events.c.event_id == event_id)
                )
            ).first()
        if row is None:
            return None
        return HandledEvent(
            event_id=row.event_id,
            status=row.status,
            topic=row.topic,
            partition=row.partition,
            offset=row.offset,
            handled_at=_aware(row.handled_at),
        )

    async def record(
        self, event_id: str, *, status: str, topic: str, partition: int, offset: int
    ) -> bool:
        """Mark `event_id` handled (committed when this returns); False if it already was."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    insert(handled_events).values(
                        event_id=event_id,
                        status=status,
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        handled_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            return False
        return True
