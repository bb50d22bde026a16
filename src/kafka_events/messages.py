"""What is handed to the publisher: bytes, ready to send."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One Kafka record and the id of the event it carries.

    `event_id` stays the same across every attempt to deliver this message (and across
    replays), so consumers can deduplicate on it.
    """

    topic: str
    value: bytes
    event_id: str
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())


def header(headers: Headers, name: str) -> bytes | None:
    """The last value of header `name` (Kafka allows repeats; the last one wins), or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found
