"""The accounting's explanations (pure): refusals said not kept, and why an event is on the
topic more than once."""

from __future__ import annotations

from datetime import UTC, datetime

from app.verification.events import EVENT_TYPE
from chaos.accounting import Answer, Request, TopicRecord, account
from chaos.duplicates import (
    CAUSE_LATE_REPLAY,
    CAUSE_LATE_REQUEST,
    CAUSE_NO_RECORD,
    CAUSE_REPUBLISHED,
    explain_duplicates,
)
from chaos.faults import Fault, Outcome
from kafka_events.store import Origin, Status, StoredMessage


def _request(seq: int) -> Request:
    return Request(
        index=seq,
        client=0,
        seq=seq,
        email="a@example.com",
        redirect_url=f"https://app.example.com/verify/r/0/{seq}",
    )


def _refused(seq: int, event_id: str, record_id: str | None, delivery: str) -> Answer:
    body = {"event_id": event_id, "record_id": record_id, "delivery": delivery}
    return Answer(request=_request(seq), status=503, body=body, elapsed_s=5.0)


def _copy(seq: int, event_id: str, offset: int) -> TopicRecord:
    request = _request(seq)
    return TopicRecord(
        partition=0,
        offset=offset,
        key=request.email.encode(),
        headers=(("event_id", event_id.encode()),),
        event_id=event_id,
        email=request.email,
        redirect_url=request.redirect_url,
        event_type=EVENT_TYPE,
    )


def _record(event_id: str, *, replays: int = 0) -> StoredMessage:
    return StoredMessage(
        id=f"r-{event_id}",
        seq=1,
        event_id=event_id,
        origin=Origin.FAILED,
        policy="replicated",
        topic="t",
        key=None,
        value=b"{}",
        headers=(),
        status=Status.DELIVERED,
        error_type=None,
        error=None,
        attempts=1,
        replays=replays,
        created_at=datetime.now(UTC),
        first_failed_at=None,
        last_failed_at=None,
        delivered_at=None,
        partition=None,
        offset=None,
        timestamp=None,
    )


def test_each_extra_copy_is_put_down_to_what_the_answer_and_the_store_show() -> None:
    answers = [_refused(0, "late", "r-late", "unknown"), _refused(1, "sent", "r-sent", "not_sent")]
    copies = {"late": 3, "sent": 2, "replayed": 3, "orphan": 2, "once": 1}
    stored = [_record("late"), _record("sent"), _record("replayed", replays=1)]

    causes = explain_duplicates(answers, copies, stored)

    assert causes == {
        CAUSE_LATE_REQUEST: 1,  # the request's own attempt, written after its deadline
        CAUSE_LATE_REPLAY: 1,  # one replay timed out, so one more copy is explained
        CAUSE_REPUBLISHED: 1 + 1 + 1,  # late's third copy, sent's second, replayed's third
        CAUSE_NO_RECORD: 1,
    }


def test_a_refusal_that_kept_nothing_is_not_kept_and_counted_when_delivered_anyway() -> None:
    answers = [
        _refused(0, "e0", None, "unknown"),  # not kept, but on the topic
        _refused(1, "e1", None, "not_sent"),  # not kept, not on the topic
        _refused(2, "e2", "r-missing", "not_sent"),  # names a record the store lacks
    ]

    result = account(answers, [_copy(0, "e0", 0)], [])

    assert len(result.not_kept) == 2
    assert result.not_kept_delivered == 1
    assert len(result.unrecorded) == 3  # not kept ones included: the store has none of them
    assert "delivery: unknown" in result.not_kept[0]


def test_a_copy_published_again_is_a_problem_unless_the_fault_crashes_the_service() -> None:
    result = account([], [], [])
    result.duplicate_causes[CAUSE_REPUBLISHED] = 2

    def outcome(fault: Fault) -> Outcome:
        return Outcome(fault, result, 1.0, 1.0, [], 1, {}, [])

    async def script(_: object) -> None:
        return None

    calm = outcome(Fault("calm", "nothing", script))
    crash = outcome(Fault("crash", "SIGKILL", script, crash=True))

    assert calm.problems == [
        "2 copies published again with no failure recorded and no crash "
        "(Kafka acknowledged, the store was not updated)"
    ]
    assert crash.problems == []


def test_a_408_is_a_request_not_read_and_must_not_be_on_the_topic() -> None:
    timed_out = [
        Answer(request=_request(seq), status=408, body={"error": "request_timeout"}, elapsed_s=15.0)
        for seq in (0, 1)
    ]

    result = account(timed_out, [_copy(1, "e1", 0)], [])

    assert result.other_statuses == {}  # expected of a paused service, not a bug
    assert result.by_status[408] == 2
    assert result.unanswered_delivered == 1  # the one found on the topic is counted
