"""`Idempotency-Key` on POST /verification-emails, against a real broker and a real SQLite
store: a retry gets the first answer and publishes nothing more; a retry after a 503 that
kept nothing carries the same event id, in any process; a key reused for another request is
refused."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic, read_at, record_count
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f'"{uuid.uuid4()}"'}


async def test_a_retry_with_the_same_key_gets_the_first_answer_and_publishes_nothing_more(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name)
    headers = _key()
    async with running_app(make_settings(bootstrap, topic)) as running:
        first = await running.client.post("/verification-emails", json=BODY, headers=headers)
        retry = await running.client.post("/verification-emails", json=BODY, headers=headers)
        other = await running.client.post("/verification-emails", json=BODY, headers=_key())
        reused = await running.client.post(
            "/verification-emails", json={**BODY, "email": "eve@example.com"}, headers=headers
        )
        bad = await running.client.post(
            "/verification-emails", json=BODY, headers={"Idempotency-Key": "x" * 256}
        )

    assert first.status_code == retry.status_code == other.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other.json()["event_id"] != first.json()["event_id"]  # a new key, a new event
    assert await record_count(bootstrap, topic) == 2  # the retry published nothing
    assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_request")


async def test_a_retry_after_a_503_that_kept_nothing_publishes_the_same_event_id_in_any_process(
    kafka_broker: KafkaCluster, topic_name: str, tmp_path: object
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name)
    headers = _key()
    # No broker answers, and the store is locked by another writer: nothing can be kept.
    unreachable = make_settings(
        f"127.0.0.1:{closed_port()}", topic, delivery_timeout_ms=1000, attempt_timeout_ms=500
    )
    async with running_app(unreachable) as running:
        store_file = unreachable.store.url.removeprefix("sqlite+aiosqlite:///")
        locker = sqlite3.connect(store_file, timeout=1)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            failed = await running.client.post("/verification-emails", json=BODY, headers=headers)
        finally:
            locker.rollback()
            locker.close()
    # The client retries as told, and reaches another process (another app, another store).
    async with running_app(make_settings(bootstrap, topic)) as running:
        retried = await running.client.post("/verification-emails", json=BODY, headers=headers)

    body = failed.json()
    assert failed.status_code == 503, body
    assert body["record_id"] is None
    assert "same Idempotency-Key" in body["detail"]
    assert retried.status_code == 202, retried.json()
    assert retried.json()["event_id"] == body["event_id"]  # consumers deduplicate on it
    record = await read_at(bootstrap, topic, retried.json()["partition"], retried.json()["offset"])
    assert dict(record.headers)["event_id"] == body["event_id"].encode()
