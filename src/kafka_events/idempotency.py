"""Idempotency keys: a client's retry of a request gives the same event, and the same answer.

After the IETF httpapi draft "The Idempotency-Key HTTP Header Field": the client sends a key
(`Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`, a structured-field string; a bare
token is accepted too) that it reuses, unchanged, when it retries the same request.

- **The same event.** `event_id(key, fingerprint)` is a name-based UUID (version 5) of the
  key and of the request's fingerprint (a digest of what it asks for), in a namespace of the
  application's: the same in every process and after a restart. A retry that is published
  again (after `503 delivery: unknown`, say) carries the first attempt's event id, so the
  consumers, who deduplicate on it, act once. A key reused for a different request gives a
  different event id: it can never silence that request downstream.
- **The same answer, within `window_s`.** `begin()` returns the answer kept for the key, if
  any; the caller returns it again. Only answers that a retry must not change are kept
  (`finish(key, answer)`): success, and failures that say "do not resend" (recorded, or
  published with no reply in time). An answer that asks the client to retry (not kept,
  rate-limited) is forgotten (`finish(key, None)`), so the retry runs again, under the same
  event id.
- **Misuse.** The key of a request still in progress: `IdempotencyKeyInUse` (409). The key of
  another request (its fingerprint differs) within the window: `IdempotencyKeyReused` (422).
  A value that is not a key: `InvalidIdempotencyKey` (400).

Bounded: at most `max_keys` keys are kept, in the order they were first used; the oldest
finished one is dropped first (a request in progress is never dropped, and in-progress keys
are bounded by the requests in progress). Per process: with several processes or replicas, a
retry that reaches another process runs again (same event id, so downstream still
deduplicates) rather than getting the kept answer.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kafka_events.errors import KafkaEventsError

HEADER = "Idempotency-Key"
# printable ASCII without the quote and the backslash (a string of RFC 9651, unescaped)
_KEY = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]{1,255}$")

_T = TypeVar("_T")


class InvalidIdempotencyKey(KafkaEventsError):
    """The `Idempotency-Key` header is not 1-255 printable ASCII characters."""


class IdempotencyKeyInUse(KafkaEventsError):
    """A request with this key is still in progress (the client retried too soon)."""


class IdempotencyKeyReused(KafkaEventsError):
    """This key was used for a different request within the window."""


def parse_key(value: str) -> str:
    """The key in an `Idempotency-Key` header value (`"abc"` or `abc`).

    Raises:
        InvalidIdempotencyKey: it is empty, too long, or not printable ASCII.
    """
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not _KEY.match(text):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1 to 255 printable ASCII characters, e.g. a quoted UUID"
        )
    return text


def fingerprint(*parts: str | bytes) -> str:
    """A digest of what a request asks for (its body and the options that change its answer)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


@dataclass(slots=True)
class _Entry(Generic[_T]):
    fingerprint: str
    started: float
    answer: _T | None = None
    done: bool = False


class IdempotencyKeys(Generic[_T]):
    """The keys seen within `window_s` and the answers kept for them (see the module doc)."""

    def __init__(
        self,
        namespace: str,
        *,
        window_s: float = 86_400,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or max_keys < 1:
            raise ValueError("window_s must be positive and max_keys at least 1")
        self._namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"kafka-events:{namespace}")
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[_T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def event_id(self, key: str, request_fingerprint: str) -> str:
        """The event id of the request `request_fingerprint` sent under `key`."""
        return str(uuid.uuid5(self._namespace, f"{request_fingerprint}:{key}"))

    def begin(self, key: str, request_fingerprint: str) -> _T | None:
        """The answer kept for `key`, or None: then the request runs, and the caller must
        `finish()` it (in a `finally`).

        Raises:
            IdempotencyKeyInUse: the key's first request is still in progress.
            IdempotencyKeyReused: the key belongs to a different request.
        """
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != request_fingerprint:
                raise IdempotencyKeyReused(
                    f"this {HEADER} was used for a different request; use a new key"
                )
            if not entry.done:
                raise IdempotencyKeyInUse(
                    f"a request with this {HEADER} is in progress; retry after it answers"
                )
            return entry.answer
        self._make_room()
        self._entries[key] = _Entry(request_fingerprint, now)
        return None

    def finish(self, key: str, answer: _T | None) -> None:
        """Keep `answer` for `key` for the rest of the window; None: forget the key."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if answer is None:
            del self._entries[key]
            return
        entry.answer, entry.done = answer, True

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now - entry.started < self.window_s:
                return
            if not entry.done:  # in progress for a whole window: its request keeps it
                entries.move_to_end(key)
                return
            del entries[key]

    def _make_room(self) -> None:
        entries = self._entries
        if len(entries) < self.max_keys:
            return
        for key, entry in entries.items():  # the oldest finished key
            if entry.done:
                del entries[key]
                return
