"""The ids that tie a log line, and a Kafka record, to a request and an event.

Two context variables (contextvars: they follow a task and the tasks it starts):

- `correlation_id`: the id of the request (or job) that caused the work. Records published
  from typed events carry it in their `correlation_id` header; the relay and the consumer
  runner bind it from there while they handle a record.
- `event_id`: the event being published, replayed or handled.

`bound(...)` binds them for a block. `ContextFilter` adds them to every log record, so that any
formatter can show them: the library logs through the standard `logging` module and never
configures it.

Not to be confused with request-reply's `kafka_correlationId` header, which pairs a request
with its reply.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from kafka_events.messages import Headers, header

CORRELATION_HEADER = "correlation_id"
"""The Kafka header that carries the correlation id from the producer to its consumers."""

_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

correlation_id: ContextVar[str | None] = ContextVar("kafka_events_correlation_id", default=None)
event_id: ContextVar[str | None] = ContextVar("kafka_events_event_id", default=None)
_CONTEXT: dict[str, ContextVar[str | None]] = {
    "correlation_id": correlation_id,
    "event_id": event_id,
}


def valid_correlation_id(value: str) -> bool:
    """Whether `value` may be used as a correlation id (1-64 of `A-Z a-z 0-9 . _ : -`: it goes
    into logs and headers)."""
    return _CORRELATION_ID.fullmatch(value) is not None


def correlation_id_in(headers: Headers) -> str | None:
    """The correlation id in Kafka `headers` (the last one wins); None if missing or invalid."""
    found = header(headers, CORRELATION_HEADER)
    if found is None:
        return None
    text = found.decode("utf-8", errors="replace")
    return text if valid_correlation_id(text) else None


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Bind `correlation_id` and/or `event_id` (None: unknown) for everything within.

    Only the ids given are bound; each gets its previous value back on exit.

    Raises:
        TypeError: an id other than those two.
    """
    unknown = set(ids) - set(_CONTEXT)
    if unknown:
        raise TypeError(f"no log context field {', '.join(sorted(unknown))}")
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = [
        (_CONTEXT[name], _CONTEXT[name].set(value)) for name, value in ids.items()
    ]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """Adds the bound ids to each record (as `correlation_id`, `event_id`) when they are set."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in _CONTEXT.items():
            value = variable.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True
