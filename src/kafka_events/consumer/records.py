"""What a consumer reads and writes around a record, as pure functions (no I/O).

Request-reply, the wire contract of `kafka_events.replies` (and of Spring Kafka's
`ReplyingKafkaTemplate`): a request carries

- `kafka_replyTopic`: the topic to answer on (UTF-8);
- `kafka_correlationId`: opaque bytes, echoed as the reply's key and header;
- `kafka_replyPartition` (optional): the partition to answer on, decimal ASCII (`b"3"`);

and the reply has key = the correlation id, headers `kafka_correlationId`, `event_id` and (when
one is bound) `correlation_id`, and a JSON value `{"event_id", "status", "detail",
"handled_at"}`.

A dead letter is the original key, value and headers, plus `dlq_error_type`, `dlq_error`,
`dlq_attempts`, `dlq_source_topic`, `dlq_source_partition`, `dlq_source_offset`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka_events import context
from kafka_events.messages import Headers, header

REPLY_TOPIC = "kafka_replyTopic"
REPLY_PARTITION = "kafka_replyPartition"
CORRELATION_ID = "kafka_correlationId"

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DETAIL_MAX = 300


def event_id_of(headers: Headers) -> str | None:
    """The `event_id` header, for logging and replying about a record whose value is unreadable."""
    raw = header(headers, "event_id")
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace")[:64]
    return text or None


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    topic: str
    correlation_id: bytes
    partition: int | None = None


class InvalidReplyHeaders(ValueError):
    """The record asks for a reply, but its reply headers are unusable (logged, no reply)."""


def reply_address(headers: Headers) -> ReplyAddress | None:
    """Where to answer this record, or None when it asks for no reply.

    Raises:
        InvalidReplyHeaders: a reply topic without a correlation id, a topic name Kafka refuses,
            or a partition that is not a non-negative decimal number.
    """
    raw_topic = header(headers, REPLY_TOPIC)
    if raw_topic is None:
        return None
    correlation_id = header(headers, CORRELATION_ID)
    if correlation_id is None:
        raise InvalidReplyHeaders(f"{REPLY_TOPIC} without {CORRELATION_ID}")
    try:
        topic = raw_topic.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidReplyHeaders(f"{REPLY_TOPIC} is not UTF-8") from None
    if not _TOPIC.match(topic) or topic in {".", ".."}:
        raise InvalidReplyHeaders(f"{REPLY_TOPIC} is not a Kafka topic name")
    raw_partition = header(headers, REPLY_PARTITION)
    partition = None
    if raw_partition is not None:
        if not re.fullmatch(rb"[0-9]{1,9}", raw_partition):
            raise InvalidReplyHeaders(f"{REPLY_PARTITION} is not a decimal partition number")
        partition = int(raw_partition)
    return ReplyAddress(topic=topic, correlation_id=correlation_id, partition=partition)


def reply_value(
    *, event_id: str | None, status: str, detail: str | None, handled_at: datetime
) -> bytes:
    """The JSON value of a reply (`handled_at` must be timezone-aware; sent as UTC)."""
    if handled_at.tzinfo is None:
        raise ValueError("handled_at must be timezone-aware")
    body = {
        "event_id": event_id,
        "status": status,
        "detail": detail,
        "handled_at": handled_at.astimezone(UTC).isoformat(),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def reply_headers(
    address: ReplyAddress, event_id: str | None, log_correlation_id: str | None = None
) -> list[tuple[str, bytes]]:
    """The requester's `kafka_correlationId`, the event id, and the logs' correlation id."""
    headers = [(CORRELATION_ID, address.correlation_id)]
    if event_id is not None:
        headers.append(("event_id", event_id.encode()))
    if log_correlation_id is not None:
        headers.append((context.CORRELATION_HEADER, log_correlation_id.encode()))
    return headers


def dead_letter_headers(
    original: Headers,
    *,
    error_type: str,
    error: str,
    attempts: int,
    topic: str,
    partition: int,
    offset: int,
) -> list[tuple[str, bytes]]:
    """The original headers, then the `dlq_*` ones (replacing those of an earlier dead letter)."""
    added = {
        "dlq_error_type": error_type,
        "dlq_error": shorten(error),
        "dlq_attempts": str(attempts),
        "dlq_source_topic": topic,
        "dlq_source_partition": str(partition),
        "dlq_source_offset": str(offset),
    }
    kept = [(name, value) for name, value in original if name not in added]
    return kept + [(name, value.encode()) for name, value in added.items()]


def shorten(text: str, limit: int = _DETAIL_MAX) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
