"""Typed events: how a pydantic model or a dataclass becomes a Kafka record.

Declare an event with `@event`::

    @event(topic="orders.placed", key="order_id", type="order.placed")
    class OrderPlaced(BaseModel):
        order_id: str
        total_cents: int

and `KafkaEvents.emit(OrderPlaced(...), policy=...)` publishes it. The record:

- key: the attribute named by `key` (or what a callable `key` returns), UTF-8; none without;
- value: the serializer's bytes; by default JSON, the envelope first, then the event's fields:
  `{"event_id", "event_type", "event_version", "occurred_at", ...fields}`;
- headers: `event_id`, `event_type`, `content_type`, `correlation_id` (when one is bound or
  given, `kafka_events.context`), then the event's own (`headers=`).

The event id is the event's own `event_id` attribute when it has one (so a retry of the same
event keeps it), else a new UUID; `occurred_at` likewise (else now, UTC). Envelope fields the
event has itself are not repeated.

A `Serializer` replaces JSON (e.g. Avro or Protobuf against a schema registry): it gets the
topic, the event and the envelope, and returns the value's bytes and its content type. An
event that cannot be encoded raises `EncodingError`: nothing is sent, and nothing is kept (a
replay could not encode it either).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from kafka_events import context
from kafka_events.errors import EncodingError
from kafka_events.messages import OutgoingMessage

_E = TypeVar("_E", bound=type)

KeyOf = Callable[[Any], str | bytes | None]
HeadersOf = Callable[[Any], Mapping[str, str | bytes]]

_SPEC = "__kafka_event__"
_ENVELOPE = ("event_id", "event_type", "event_version", "occurred_at")


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What `@event` declared: where an event goes and how it is keyed and typed."""

    type: str
    topic: str | None = None
    key: str | KeyOf | None = None
    version: int = 1
    headers: HeadersOf | None = None


def event(
    *,
    topic: str | None = None,
    key: str | KeyOf | None = None,
    type: str | None = None,
    version: int = 1,
    headers: HeadersOf | None = None,
) -> Callable[[_E], _E]:
    """Declare a pydantic model or dataclass as an event.

    Args:
        topic: where it is published (else `emit(..., topic=...)` must say).
        key: the attribute that keys the record (same key, same partition, in order), or a
            callable of the event; none: no key.
        type: `event_type` on the wire; default: the class name.
        version: `event_version` on the wire.
        headers: a callable giving extra headers of the event.
    """

    def declare(cls: _E) -> _E:
        spec = EventSpec(
            type=type or cls.__name__, topic=topic, key=key, version=version, headers=headers
        )
        setattr(cls, _SPEC, spec)
        return cls

    return declare


def spec_of(value: object) -> EventSpec:
    """The `EventSpec` of an event; an undeclared model or dataclass gets the defaults.

    Raises:
        TypeError: `value` is neither a pydantic model nor a dataclass instance.
    """
    spec = getattr(type(value), _SPEC, None)
    if isinstance(spec, EventSpec):
        return spec
    if isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return EventSpec(type=type(value).__name__)
    raise TypeError(
        f"{type(value).__name__} is not an event: emit a pydantic model, a dataclass, or an "
        "OutgoingMessage"
    )


class Serializer(Protocol):
    """Turns an event into a record value."""

    content_type: str

    def serialize(self, topic: str, event: object, envelope: Mapping[str, Any]) -> bytes:
        """The value's bytes. Raise TypeError or ValueError when `event` cannot be encoded."""
        ...


class JsonSerializer:
    """Compact UTF-8 JSON: the envelope, then the event's fields (pydantic's JSON mode)."""

    content_type = "application/json"

    def serialize(self, topic: str, event: object, envelope: Mapping[str, Any]) -> bytes:
        fields = _fields(event)
        body = {**envelope, **{k: v for k, v in fields.items() if k not in envelope}}
        return _ENCODER.encode(body).encode()


def _fields(event: object) -> dict[str, Any]:
    if isinstance(event, BaseModel):
        return event.model_dump(mode="json")
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        # shallow: dataclasses.asdict deep-copies every value, a cost on every publish
        return {name: getattr(event, name) for name in _field_names(type(event))}
    raise TypeError(f"{type(event).__name__} is neither a pydantic model nor a dataclass")


def _json_default(value: object) -> object:
    """What `json` cannot write itself: nested dataclasses and models, datetimes, the rest as
    text (UUIDs, decimals, enums of non-JSON values)."""
    if isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return _fields(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# One encoder for every event: json.dumps with options builds a new one per call.
# ensure_ascii=False keeps the value UTF-8, so .encode() meets every character.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def to_message(
    value: object,
    *,
    topic: str | None = None,
    serializer: Serializer | None = None,
    correlation_id: str | None = None,
) -> OutgoingMessage:
    """The Kafka record of the event `value` (see the module's documentation).

    Raises:
        EncodingError: it cannot be encoded (e.g. a lone surrogate in a string).
        TypeError: it is not an event.
        ValueError: no topic is known for it.
    """
    spec = spec_of(value)
    chosen = topic or spec.topic
    if chosen is None:
        raise ValueError(f"{type(value).__name__} declares no topic: pass topic=")
    event_id = str(getattr(value, "event_id", None) or uuid.uuid4())
    occurred = getattr(value, "occurred_at", None)
    occurred_at = occurred if isinstance(occurred, datetime) else datetime.now(UTC)
    envelope = {
        "event_id": event_id,
        "event_type": spec.type,
        "event_version": spec.version,
        "occurred_at": occurred_at.isoformat(),
    }
    chosen_serializer = serializer or _JSON
    correlation = correlation_id or context.correlation_id.get()
    try:
        encoded = chosen_serializer.serialize(chosen, value, envelope)
        key = _key(value, spec)
        headers = [
            ("event_id", event_id.encode()),
            ("event_type", spec.type.encode()),
            ("content_type", chosen_serializer.content_type.encode()),
        ]
        if correlation is not None:
            headers.append((context.CORRELATION_HEADER, correlation.encode()))
        if spec.headers is not None:
            headers += [
                (name, item if isinstance(item, bytes) else item.encode())
                for name, item in spec.headers(value).items()
            ]
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise EncodingError(
            f"the event cannot be serialised: {type(exc).__name__}",
            event_id=event_id,
            cause=type(exc).__name__,
        ) from None
    return OutgoingMessage(
        topic=chosen, key=key, value=encoded, event_id=event_id, headers=tuple(headers)
    )


def _key(value: object, spec: EventSpec) -> bytes | None:
    if spec.key is None:
        return None
    found = getattr(value, spec.key) if isinstance(spec.key, str) else spec.key(value)
    if found is None:
        return None
    return found if isinstance(found, bytes) else str(found).encode()


_JSON = JsonSerializer()
