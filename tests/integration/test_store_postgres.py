"""The message store on a real PostgreSQL server (asyncpg), a fresh database per test.

The SQLite scenarios of tests/unit/test_store.py that take a `store` run here unchanged,
against this module's PostgreSQL `store`; the tests below add what only a real server checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from devtools.kafka import KafkaCluster
from devtools.postgres import PostgresServer
from kafka_events.store import Origin, SqlStore, Status
from kafka_events.store.lease import AdvisoryLease
from tests.helpers.kafka import read_at
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port, eventually
from tests.integration.test_failures import BODY, FAST_RELAY
from tests.library import test_store as sqlite_scenarios

# Every scenario of the SQLite module that needs nothing but a store, by its own name.
SCENARIOS = {
    name: scenario
    for name, scenario in vars(sqlite_scenarios).items()
    if name.startswith("test_") and list(inspect.signature(scenario).parameters) == ["store"]
}
globals().update(SCENARIOS)

KAFKA_OFFSET = 2**40  # offsets and timestamps are 64-bit in Kafka
KAFKA_TIMESTAMP = 1_795_605_914_242  # ms since the epoch, as brokers stamp records


def test_the_sqlite_scenarios_are_reused() -> None:
    assert len(SCENARIOS) >= 5


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(postgres_url)
    await store.open()
    yield store
    await store.close()


async def test_a_record_reads_back_from_another_instance_with_every_field(
    postgres_server: PostgresServer, postgres_url: str, store: SqlStore
) -> None:
    # A server whose sessions are not in UTC: timestamps must still come back as UTC instants.
    database = make_url(postgres_url).database
    await asyncio.to_thread(
        postgres_server.psql, f"ALTER DATABASE \"{database}\" SET timezone TO 'Asia/Kolkata'"
    )
    sent = sqlite_scenarios.message(1)
    stored = await store.record(
        sent,
        error="broker error: é ✓",
        error_type="NotEnoughReplicasError",
        attempts=3,
        origin=Origin.FAILED,
        policy="replicated",
    )
    other = SqlStore(postgres_url)
    await other.open()  # the table exists already: found, not created again
    try:
        again = await other.get(stored.id)
    finally:
        await other.close()

    assert again == stored
    assert again.to_message() == sent
    assert again.headers == (("event_id", b"e-1"), ("bin", b"\x00\xff"))
    assert (again.status, again.origin, again.policy, again.attempts, again.replays) == (
        Status.PENDING,
        Origin.FAILED,
        "replicated",
        3,
        0,
    )
    assert (again.error_type, again.error) == ("NotEnoughReplicasError", "broker error: é ✓")
    assert again.created_at.tzinfo is not None
    assert again.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - again.created_at) < timedelta(minutes=1)
    assert again.first_failed_at == again.last_failed_at == again.created_at


async def test_instances_starting_together_on_an_empty_database_all_open(
    postgres_url: str,
) -> None:
    stores = [SqlStore(postgres_url) for _ in range(4)]

    opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
    for store in stores:
        await store.close()

    assert opened == [None] * 4


async def test_kafka_sized_offsets_and_timestamps_are_kept(store: SqlStore) -> None:
    stored = await store.record(sqlite_scenarios.message(), origin=Origin.OUTBOX, policy="leader")
    receipt = sqlite_scenarios.receipt(stored.event_id).model_copy(
        update={"offset": KAFKA_OFFSET, "timestamp": KAFKA_TIMESTAMP}
    )

    await store.mark_delivered(stored.id, receipt)
    found = await store.get(stored.id)

    assert found is not None
    assert (found.status, found.offset, found.timestamp) == (
        Status.DELIVERED,
        KAFKA_OFFSET,
        KAFKA_TIMESTAMP,
    )


async def test_a_key_less_record_and_empty_headers_round_trip(store: SqlStore) -> None:
    sent = dataclasses.replace(sqlite_scenarios.message(), key=None, headers=())

    stored = await store.record(sent, origin=Origin.OUTBOX, policy="leader")

    assert (stored.key, stored.headers) == (None, ())
    assert stored.to_message() == sent


@pytest.mark.kafka
async def test_the_app_records_a_503_in_postgres_and_its_relay_replays_it(
    kafka_broker: KafkaCluster, topic: str, postgres_url: str
) -> None:
    no_broker = make_settings(
        f"127.0.0.1:{closed_port()}",
        topic,
        store_url=postgres_url,
        delivery_timeout_ms=1000,
        connect_timeout_ms=500,
        reconnect_backoff_max_ms=300,
        replay={"enabled": False},  # the record stays exactly as the 503 left it
    )
    async with running_app(no_broker) as running:
        refused = await running.client.post("/verification-emails", json=BODY)
        body = refused.json()
        recorded = await running.state.store.get(body["record_id"])
        status = (await running.client.get(f"/events/{body['event_id']}")).json()

    # Another app on the same database, with a broker: its relay publishes the record.
    with_broker = make_settings(
        kafka_broker.bootstrap_servers, topic, store_url=postgres_url, replay=FAST_RELAY
    )
    async with running_app(with_broker) as running:
        store = running.state.store

        async def delivered() -> bool:
            found = await store.get(body["record_id"])
            return found is not None and found.status is Status.DELIVERED

        await eventually(delivered, timeout_s=30, interval_s=0.1)
        replayed = await store.get(body["record_id"])

    assert (refused.status_code, body["error"]) == (503, "broker_unavailable")
    assert recorded is not None
    assert (recorded.topic, recorded.key, recorded.event_id) == (
        topic,
        b"ada@example.com",
        body["event_id"],
    )
    event = json.loads(recorded.value)
    assert (event["event_id"], event["email"]) == (body["event_id"], BODY["email"])
    assert dict(recorded.headers) == {
        "event_id": body["event_id"].encode(),
        "event_type": event["event_type"].encode(),
        "content_type": b"application/json",
        "correlation_id": refused.headers["X-Correlation-ID"].encode(),
    }
    assert (recorded.origin, recorded.status, recorded.policy) == (
        Origin.FAILED,
        Status.PENDING,
        "replicated",
    )
    assert recorded.error_type
    assert recorded.error
    assert recorded.attempts >= 1
    assert recorded.replays == 0
    assert recorded.created_at.tzinfo is not None
    assert recorded.first_failed_at == recorded.last_failed_at == recorded.created_at
    assert (recorded.delivered_at, recorded.partition, recorded.offset) == (None, None, None)
    assert status["record_id"] == recorded.id
    assert (status["status"], status["attempts"]) == ("pending", recorded.attempts)
    assert datetime.fromisoformat(status["created_at"]) == recorded.created_at

    assert replayed is not None
    assert replayed.delivered_at is not None
    assert replayed.delivered_at > replayed.created_at
    assert replayed.partition is not None
    assert replayed.offset is not None
    assert replayed.timestamp is not None
    assert replayed.timestamp > 2**31  # ms since the epoch: needs a 64-bit column
    record = await read_at(
        kafka_broker.bootstrap_servers, topic, replayed.partition, replayed.offset
    )
    assert (record.key, record.value) == (recorded.key, recorded.value)
    assert [(k, bytes(v)) for k, v in record.headers] == list(recorded.headers)
    assert record.timestamp == replayed.timestamp


async def test_one_relay_lease_per_database_and_it_ends_with_its_session(
    store: SqlStore, postgres_url: str
) -> None:
    other = SqlStore(postgres_url)  # another process's store
    await other.open()
    first, second = AdvisoryLease(store.engine), AdvisoryLease(other.engine)
    try:
        assert isinstance(store.lease(), AdvisoryLease)
        assert (await first.acquire(), await second.acquire()) == (True, False)
        assert await first.acquire()  # kept

        # The holder's session ends (database restart, network cut): its lock goes with it.
        assert first._connection is not None
        pid = await first._connection.scalar(select(func.pg_backend_pid()))
        async with other.engine.begin() as connection:
            assert await connection.scalar(select(func.pg_terminate_backend(pid)))
        await eventually(second.acquire, timeout_s=10)
        assert not await first.acquire()  # finds its session gone, and the lease taken

        await second.release()
        assert await first.acquire()
    finally:
        await first.release()
        await second.release()
        await other.close()
