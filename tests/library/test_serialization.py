"""Typed events: pydantic models and dataclasses become keyed records with an envelope and
headers; a serializer replaces JSON; what cannot be encoded is an `EncodingError`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from kafka_events import EncodingError, context, event, to_message


@event(topic="users.signed-up", key=lambda e: e.user_id, headers=lambda e: {"tenant": e.tenant})
@dataclass(frozen=True)
class SignedUp:
    user_id: int
    tenant: str


class Untyped(BaseModel):
    text: str


def test_a_dataclass_event_gets_its_envelope_key_and_headers() -> None:
    message = to_message(SignedUp(user_id=7, tenant="acme"))

    body = json.loads(message.value)
    assert message.topic == "users.signed-up"
    assert message.key == b"7"
    assert (body["event_type"], body["event_version"], body["user_id"]) == ("SignedUp", 1, 7)
    assert body["event_id"] == message.event_id
    headers = dict(message.headers)
    assert headers["tenant"] == b"acme"
    assert headers["content_type"] == b"application/json"
    assert "correlation_id" not in headers


def test_the_bound_correlation_id_travels_in_a_header() -> None:
    with context.bound(correlation_id="req-7"):
        message = to_message(SignedUp(user_id=7, tenant="acme"))

    assert dict(message.headers)["correlation_id"] == b"req-7"


def test_an_undeclared_model_needs_a_topic_and_has_no_key() -> None:
    with pytest.raises(ValueError, match="declares no topic"):
        to_message(Untyped(text="x"))

    message = to_message(Untyped(text="x"), topic="notes")

    assert (message.topic, message.key) == ("notes", None)
    assert json.loads(message.value)["event_type"] == "Untyped"


def test_anything_else_is_not_an_event() -> None:
    with pytest.raises(TypeError, match="is not an event"):
        to_message({"text": "x"}, topic="notes")


class Upper:
    """A serializer of our own (as an Avro or Protobuf one would be)."""

    content_type = "text/plain"

    def serialize(self, topic: str, event: object, envelope: Mapping[str, Any]) -> bytes:
        return f"{topic}:{envelope['event_type']}".upper().encode()


def test_a_serializer_replaces_json() -> None:
    message = to_message(Untyped(text="x"), topic="notes", serializer=Upper())

    assert message.value == b"NOTES:UNTYPED"
    assert dict(message.headers)["content_type"] == b"text/plain"


def test_an_event_that_cannot_be_encoded_is_refused_with_its_event_id() -> None:
    with pytest.raises(EncodingError) as refused:
        to_message(SignedUp(user_id=1, tenant="\ud800"))

    assert refused.value.sent is False
    assert refused.value.event_id


@dataclass(frozen=True)
class Line:
    sku: str
    placed_at: datetime


@event(topic="orders", key="order_id")
@dataclass(frozen=True)
class WithLines:
    order_id: str
    lines: list[Line]


def test_nested_dataclasses_and_datetimes_become_json_objects_and_text() -> None:
    placed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    message = to_message(WithLines(order_id="o-1", lines=[Line(sku="s-1", placed_at=placed)]))

    assert json.loads(message.value)["lines"] == [
        {"sku": "s-1", "placed_at": "2026-01-02T03:04:05+00:00"}
    ]
