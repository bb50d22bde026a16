"""Idempotency keys without HTTP: the event id of a key, the answer kept for it, misuse, the
window and the memory bound."""

from __future__ import annotations

import pytest

from kafka_events.idempotency import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyKeys,
    InvalidIdempotencyKey,
    fingerprint,
    parse_key,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("abc", "abc"),
        (' "a b" ', "a b"),
        ("x" * 255, "x" * 255),
    ],
)
def test_a_key_is_a_quoted_or_bare_string_of_printable_ascii(value: str, key: str) -> None:
    assert parse_key(value) == key


@pytest.mark.parametrize("value", ["", '""', "x" * 256, "caf\u00e9", "a\x00b", 'a"b', "a\\b"])
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        parse_key(value)


def test_the_event_id_depends_on_the_key_the_request_and_the_namespace_only() -> None:
    one, again = IdempotencyKeys[str]("emails"), IdempotencyKeys[str]("emails")
    request, other = fingerprint("body"), fingerprint("another body")

    assert one.event_id("k", request) == again.event_id("k", request)  # in any process
    assert one.event_id("k", request) != one.event_id("k", other)
    assert one.event_id("k", request) != one.event_id("k2", request)
    assert one.event_id("k", request) != IdempotencyKeys[str]("orders").event_id("k", request)


def test_a_kept_answer_is_returned_again_within_the_window_then_forgotten() -> None:
    clock = Clock()
    keys = IdempotencyKeys[str]("emails", window_s=60, clock=clock)
    request = fingerprint("body")

    assert keys.begin("k", request) is None
    keys.finish("k", "202 first")
    clock.now = 59
    kept = keys.begin("k", request)
    clock.now = 61
    after_window = keys.begin("k", request)

    assert kept == "202 first"
    assert after_window is None  # runs again (same event id)


def test_an_answer_not_kept_lets_the_retry_run_again() -> None:
    keys = IdempotencyKeys[str]("emails")
    assert keys.begin("k", fingerprint("body")) is None
    keys.finish("k", None)  # e.g. a 503 that kept nothing

    assert keys.begin("k", fingerprint("body")) is None
    assert len(keys) == 1


def test_a_key_in_progress_or_of_another_request_is_refused() -> None:
    keys = IdempotencyKeys[str]("emails")
    assert keys.begin("k", fingerprint("body")) is None

    with pytest.raises(IdempotencyKeyInUse):
        keys.begin("k", fingerprint("body"))
    with pytest.raises(IdempotencyKeyReused):
        keys.begin("k", fingerprint("another body"))
    keys.finish("k", "202")
    with pytest.raises(IdempotencyKeyReused):
        keys.begin("k", fingerprint("another body"))


def test_memory_is_bounded_whatever_the_number_of_keys() -> None:
    keys = IdempotencyKeys[str]("emails", max_keys=100)
    for n in range(10_000):
        keys.begin(f"k{n}", fingerprint(str(n)))
        keys.finish(f"k{n}", "202")

    assert len(keys) == 100
    assert keys.begin("k9999", fingerprint("9999")) == "202"  # the newest are kept
    assert keys.begin("k0", fingerprint("0")) is None  # the oldest were dropped


def test_a_request_in_progress_is_never_dropped_to_make_room() -> None:
    keys = IdempotencyKeys[str]("emails", max_keys=2)
    keys.begin("slow", fingerprint("slow"))
    for n in range(5):
        keys.begin(f"k{n}", fingerprint(str(n)))
        keys.finish(f"k{n}", "202")

    with pytest.raises(IdempotencyKeyInUse):
        keys.begin("slow", fingerprint("slow"))
