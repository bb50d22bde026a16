"""The store contract: a durable record of every message Kafka has not yet acknowledged.

Two kinds of records, one store, one relay:
- `failed`: a publish that finally failed; recorded before the caller hears of the failure.
- `outbox`: a message of an outbox policy; recorded before the caller gets its receipt (or,
  with `SqlStore.add_to_outbox`, inside the caller's own database transaction).

Statuses::

    pending --(relay publishes it)--> delivered   (partition, offset, timestamp kept)
       |  \\--(max replay attempts)--> abandoned  (kept; replayed by hand)
       \\--(not publishable: too large, rejected)--> abandoned

A store is anything with the methods of `MessageStore`, in the manner of procrastinate's
connectors: `SqlStore` (SQLite or PostgreSQL through SQLAlchemy) and `MemoryStore` (one
process, for tests) are the two shipped. Every method raises `StoreError` (or `TimeoutError`,
`OSError`) when the store cannot do what was asked; callers bound each call with a timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt


class Origin(StrEnum):
    FAILED = "failed"
    OUTBOX = "outbox"


class Status(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One record of the store, as it is now."""

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


class Lease(Protocol):
    """The right to replay a store: one relay holds it at a time (`kafka_events.store.lease`)."""

    async def acquire(self) -> bool:
        """Whether this process holds the lease now (taken if free; kept if held). Never waits."""
        ...

    async def release(self) -> None:
        """Give the lease up, if held."""
        ...


class MessageStore(Protocol):
    """What the delivery service, the relay and the admin tools need of a store."""

    async def open(self) -> None:
        """Connect (creating what is missing on first use)."""
        ...

    async def close(self) -> None: ...

    def lease(self) -> Lease:
        """The relay lease of this store (a new object; one per relay)."""
        ...

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
        ...

    async def get(self, record_id: str) -> StoredMessage | None: ...

    async def find_event(self, event_id: str) -> StoredMessage | None:
        """The newest record of an event."""
        ...

    async def list(
        self, *, status: Status | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[StoredMessage]:
        """Records in creation order, optionally of one status, after `after_seq`."""
        ...

    async def count(self, status: Status | None = None) -> int: ...

    async def mark_delivered(self, record_id: str, receipt: DeliveryReceipt) -> None: ...

    async def mark_failed(
        self, record_id: str, *, error_type: str, error: str, abandon: bool
    ) -> None:
        """Count a failed replay; `abandon` stops the automatic replay of this record."""
        ...

    async def requeue(self, record_ids: Sequence[str] | None = None) -> int:
        """Make abandoned records (all, or these) pending again; returns how many."""
        ...

    async def purge(self, *, status: Status = Status.DELIVERED) -> int:
        """Delete records of `status` (delivered by default); returns how many."""
        ...
