"""The contract check: before it is measured, each contender must answer like the others.

- A valid request gets the contender's status (202, or 200 for request-reply) with the
  event id and, for emit, the topic, partition and offset the broker gave it.
- The record it wrote (the topic's latest) has the email as key, the event's JSON value and
  the headers `event_id`, `event_type` and `content_type`.
- Bad requests (an invalid address, an unknown field, a body that is not JSON, a missing
  field) get a 4xx JSON answer, never a 5xx.

Deviations are collected as sentences, reported with the results; none stops the run.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import httpx

from bench import topics

__all__ = ["Check", "check"]

REDIRECT_URL = "https://app.example.com/verify"
BAD_BODIES: tuple[tuple[str, bytes], ...] = (
    (
        "invalid address",
        b'{"email": "not-an-address", "redirect_url": "' + REDIRECT_URL.encode() + b'"}',
    ),
    (
        "unknown field",
        b'{"email": "a@example.com", "redirect_url": "'
        + REDIRECT_URL.encode()
        + b'", "admin": true}',
    ),
    ("not JSON", b"{not json"),
    ("missing field", b'{"email": "a@example.com"}'),
)
HEADERS = ("event_id", "event_type", "content_type")


@dataclass(slots=True)
class Check:
    deviations: list[str] = field(default_factory=list)
    bad_statuses: dict[str, int] = field(default_factory=dict)
    accepted: int = 0  # valid requests answered 2xx (they wrote a record)

    @property
    def ok(self) -> bool:
        return not self.deviations


def check(url: str, *, expected: int, topic: str | None, bootstrap: str, emit: bool) -> Check:
    result = Check()
    email = f"contract-{uuid.uuid4().hex[:12]}@example.com"
    with httpx.Client(timeout=15.0) as client:
        answer = client.post(url, json={"email": email, "redirect_url": REDIRECT_URL})
        if 200 <= answer.status_code < 300:
            result.accepted += 1
        if answer.status_code != expected:
            result.deviations.append(f"a valid request got {answer.status_code}, not {expected}")
        else:
            _check_answer(answer, result, topic=topic, emit=emit)
        for what, body in BAD_BODIES:
            bad = client.post(url, content=body, headers={"content-type": "application/json"})
            result.bad_statuses[what] = bad.status_code
            if not 400 <= bad.status_code < 500:
                result.deviations.append(f"{what}: {bad.status_code}, not a 4xx")
            elif "json" not in bad.headers.get("content-type", ""):
                result.deviations.append(f"{what}: the {bad.status_code} is not JSON")
            if 200 <= bad.status_code < 300:
                result.accepted += 1
    if topic is not None:
        _check_record(topics.last_record(bootstrap, topic), email, result)
    return result


def _check_answer(answer: httpx.Response, result: Check, *, topic: str | None, emit: bool) -> None:
    try:
        body = answer.json()
    except ValueError:
        result.deviations.append("the answer is not JSON")
        return
    if not isinstance(body, dict) or "event_id" not in body:
        result.deviations.append("the answer has no event_id")
        return
    if not emit:
        if "reply" not in body:
            result.deviations.append("the request-reply answer has no reply")
        return
    if topic is not None and body.get("topic") != topic:
        result.deviations.append(f"the answer names topic {body.get('topic')!r}")
    for name in ("partition", "offset"):
        if name not in body:
            result.deviations.append(f"the answer has no {name}")


def _check_record(record: topics.Record | None, email: str, result: Check) -> None:
    if record is None:
        result.deviations.append("no record on the topic")
        return
    if record.key != email.encode():
        result.deviations.append(f"the record's key is {record.key!r}, not the email")
    try:
        value = json.loads(record.value or b"")
    except ValueError:
        result.deviations.append("the record's value is not JSON")
        value = {}
    if not isinstance(value, dict):
        value = {}
    for name in ("event_id", "event_type", "email", "redirect_url", "occurred_at"):
        if name not in value:
            result.deviations.append(f"the record's value has no {name}")
    present = {name for name, _ in record.headers}
    missing = [name for name in HEADERS if name not in present]
    if missing:
        result.deviations.append(f"the record has no header {', '.join(missing)}")
