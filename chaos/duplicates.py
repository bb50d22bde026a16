"""Why an event is on the topic more than once: each extra copy explained by the evidence.

For an event the store has a record of, the copies that may exist are: the one the relay
(or the first publish) got acknowledged, plus one for each attempt that passed its deadline
while a broker still had it and so may have been written late: the request's own attempt
when its 503 said `delivery: unknown`, and each replay the store counts as failed
(`replays`). Copies beyond those were published again although no failure was recorded: the
store could not be updated after Kafka acknowledged (or the process crashed in between).

An event the store has no record of cannot be explained this way (`CAUSE_NO_RECORD`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from kafka_events.store import StoredMessage

CAUSE_LATE_REQUEST = "a 503 with delivery unknown was written late, then replayed"
CAUSE_LATE_REPLAY = "a replay passed its deadline, was written late, then retried"
CAUSE_REPUBLISHED = "published again with no failure recorded (store not updated, or a crash)"
CAUSE_NO_RECORD = "no record in the store"


class _Answer(Protocol):
    @property
    def status(self) -> int | None: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def body(self) -> Mapping[str, Any]: ...


def explain_duplicates(
    answers: Iterable[_Answer], copies: Mapping[str, int], stored: Iterable[StoredMessage]
) -> Counter[str]:
    """Cause -> number of extra copies, over every event with `copies` above 1."""
    late_requests = {
        a.event_id
        for a in answers
        if a.status is not None and a.status >= 500 and a.body.get("delivery") == "unknown"
    }
    records = {s.event_id: s for s in stored}
    causes: Counter[str] = Counter()
    for event_id, count in copies.items():
        extra = count - 1
        if extra <= 0:
            continue
        record = records.get(event_id)
        if record is None:
            causes[CAUSE_NO_RECORD] += extra
            continue
        for cause, possible in (
            (CAUSE_LATE_REQUEST, 1 if event_id in late_requests else 0),
            (CAUSE_LATE_REPLAY, record.replays),
        ):
            taken = min(extra, possible)
            if taken:
                causes[cause] += taken
                extra -= taken
        if extra:
            causes[CAUSE_REPUBLISHED] += extra
    return causes
