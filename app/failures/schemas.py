"""Bodies of the event-status and admin routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kafka_events.store import StoredMessage

# Bounds of what a request may ask the store for, so that no value reaches the database that it
# cannot take (a 500 otherwise). Ids: the store's are UUIDs; any id is at most 64 characters (the
# event_id column) of letters, digits and `. _ : -`, never a NUL, which PostgreSQL's text refuses.
ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
ID_MAX_LENGTH = 64
# `seq` is an INTEGER column: 32 bits on PostgreSQL (SQLite's takes 64), so no stored seq is larger.
MAX_SEQ = 2**31 - 1
MAX_LIST_LIMIT = 1000

StoredId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)
]


class EventStatus(BaseModel):
    """Where a stored event is: pending (waiting for the relay), delivered, or abandoned."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
                    "record_id": "4d0c1c1e-2b1a-4a63-8d0b-0c4b1e0f9a77",
                    "origin": "outbox",
                    "status": "delivered",
                    "policy": "replicated",
                    "topic": "send.verification.email",
                    "attempts": 0,
                    "replays": 0,
                    "error_type": None,
                    "created_at": "2026-11-25T12:00:00Z",
                    "delivered_at": "2026-11-25T12:00:00.150000Z",
                    "partition": 0,
                    "offset": 42,
                    "timestamp": 1795605914242,
                }
            ]
        }
    )

    event_id: str
    record_id: str
    origin: Literal["failed", "outbox"]
    status: Literal["pending", "delivered", "abandoned"]
    policy: str
    topic: str
    attempts: int = Field(description="Attempts of the original publish.")
    replays: int = Field(description="Failed rounds of the relay so far.")
    error_type: str | None = Field(description="Kind of the last error, if any.")
    created_at: datetime
    delivered_at: datetime | None
    partition: int | None
    offset: int | None
    timestamp: int | None

    @classmethod
    def of(cls, record: StoredMessage) -> EventStatus:
        return cls(
            event_id=record.event_id,
            record_id=record.id,
            origin=record.origin.value,
            status=record.status.value,
            policy=record.policy,
            topic=record.topic,
            attempts=record.attempts,
            replays=record.replays,
            error_type=record.error_type,
            created_at=record.created_at,
            delivered_at=record.delivered_at,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
        )


class StoredRecord(EventStatus):
    """A stored message with its error text, for operators."""

    seq: int = Field(description="Its position in the store: give the last as `after_seq` to page.")
    error: str | None
    key: str | None = Field(description="The record key, decoded as UTF-8 (lossy).")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[StoredId] | None = Field(default=None, max_length=10000)
    all: bool = Field(default=False, description="Every abandoned record.")


class CountBody(BaseModel):
    count: int
