"""The receipts of a publish: where the broker put the message and how it got there, or where
the outbox keeps it until the relay publishes it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TimestampType = Literal["CreateTime", "LogAppendTime"]


class DeliveryReceipt(BaseModel):
    """The broker's offset metadata for one message, plus how it was delivered.

    With acks=0 the broker sends no answer: `confirmed` is false and the partition, offset and
    timestamps are null rather than invented.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Id of the event, the same on every attempt and replay.")
    topic: str = Field(description="Topic the message was written to.")
    partition: int | None = Field(description="Partition, null when unconfirmed (acks=0).")
    offset: int | None = Field(description="Offset in the partition, null when unconfirmed.")
    timestamp: int | None = Field(
        description="Record timestamp in milliseconds since the epoch, as the broker stored it."
    )
    timestamp_type: TimestampType | None = Field(
        description="CreateTime (set by the producer) or LogAppendTime (set by the broker)."
    )
    log_start_offset: int | None = Field(
        description="First offset still kept in the partition, when the broker reports it."
    )
    policy: str = Field(description="Delivery policy the message was published under.")
    acks: Literal["0", "1", "all"] = Field(description="Acknowledgement level used.")
    idempotent: bool = Field(description="Whether the producer was idempotent.")
    confirmed: bool = Field(description="Whether the broker acknowledged the write.")
    attempts: int = Field(
        ge=1, description="Publish attempts made by the application (retries + 1)."
    )
    elapsed_ms: float = Field(ge=0, description="Time from publish to acknowledgement.")
    deadline_ms: int = Field(gt=0, description="The deadline the publish ran under.")


class QueuedReceipt(BaseModel):
    """An outbox message: stored durably, to be published by the relay."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Id of the event; follow it at GET /events/{event_id}.")
    record_id: str = Field(description="Id of the stored record.")
    topic: str
    policy: str
    status: Literal["queued"] = "queued"


Receipt = DeliveryReceipt | QueuedReceipt
"""What an emit returns: the broker's receipt, or the outbox's."""
