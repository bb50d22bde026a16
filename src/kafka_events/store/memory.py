"""A message store in this process's memory: for tests and examples, never for production.

It keeps the contract of `MessageStore` (order, statuses, counts) but nothing survives the
process, so a message recorded here is lost with it. `capacity` bounds it: recording beyond
it raises `StoreError`, as a full database would.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from kafka_events.errors import StoreError
from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt
from kafka_events.store.base import Lease, Origin, Status, StoredMessage
from kafka_events.store.lease import Held


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryStore:
    """`MessageStore` in a dict, bounded by `capacity` records."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._records: dict[str, StoredMessage] = {}
        self._seq = 0
        self._capacity = capacity
        self.fail_with: Exception | None = None  # set by tests: every call raises it

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def lease(self) -> Lease:
        return Held()

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

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
        self._check()
        if len(self._records) >= self._capacity:
            raise StoreError(f"the memory store is full ({self._capacity} records)")
        self._seq += 1
        now = _now()
        stored = StoredMessage(
            id=str(uuid.uuid4()),
            seq=self._seq,
            event_id=message.event_id,
            origin=origin,
            policy=policy,
            topic=message.topic,
            key=message.key,
            value=message.value,
            headers=tuple(message.headers),
            status=Status.PENDING,
            error_type=error_type,
            error=error,
            attempts=attempts,
            replays=0,
            created_at=now,
            first_failed_at=now if error_type else None,
            last_failed_at=now if error_type else None,
            delivered_at=None,
            partition=None,
            offset=None,
            timestamp=None,
        )
        self._records[stored.id] = stored
        return stored

    async def get(self, record_id: str) -> StoredMessage | None:
        self._check()
        return self._records.get(record_id)

    async def find_event(self, event_id: str) -> StoredMessage | None:
        self._check()
        found = [r for r in self._records.values() if r.event_id == event_id]
        return max(found, key=lambda r: r.seq) if found else None

    async def list(
        self, *, status: Status | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[StoredMessage]:
        self._check()
        chosen = (
            r
            for r in sorted(self._records.values(), key=lambda r: r.seq)
            if r.seq > after_seq and (status is None or r.status is status)
        )
        return [r for _, r in zip(range(limit), chosen, strict=False)]

    async def count(self, status: Status | None = None) -> int:
        self._check()
        return sum(1 for r in self._records.values() if status is None or r.status is status)

    async def mark_delivered(self, record_id: str, receipt: DeliveryReceipt) -> None:
        self._check()
        if (record := self._records.get(record_id)) is not None:
            self._records[record_id] = replace(
                record,
                status=Status.DELIVERED,
                delivered_at=_now(),
                partition=receipt.partition,
                offset=receipt.offset,
                timestamp=receipt.timestamp,
            )

    async def mark_failed(
        self, record_id: str, *, error_type: str, error: str, abandon: bool
    ) -> None:
        self._check()
        if (record := self._records.get(record_id)) is not None:
            now = _now()
            self._records[record_id] = replace(
                record,
                replays=record.replays + 1,
                error_type=error_type,
                error=error,
                first_failed_at=record.first_failed_at or now,
                last_failed_at=now,
                status=Status.ABANDONED if abandon else Status.PENDING,
            )

    async def requeue(self, record_ids: Sequence[str] | None = None) -> int:
        self._check()
        chosen = [
            r
            for r in self._records.values()
            if r.status is Status.ABANDONED and (record_ids is None or r.id in record_ids)
        ]
        for record in chosen:
            self._records[record.id] = replace(record, status=Status.PENDING, replays=0)
        return len(chosen)

    async def purge(self, *, status: Status = Status.DELIVERED) -> int:
        self._check()
        chosen = [r.id for r in self._records.values() if r.status is status]
        for record_id in chosen:
            del self._records[record_id]
        return len(chosen)
