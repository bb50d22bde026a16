"""The message store on a real SQLite file: durable records, statuses, order."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt
from kafka_events.store import Origin, SqlStore, Status
from tests.helpers.waiting import repo_root


def message(n: int = 0) -> OutgoingMessage:
    return OutgoingMessage(
        topic="t",
        value=b'{"n": %d}' % n,
        key=b"ada@example.com",
        event_id=f"e-{n}",
        headers=(("event_id", f"e-{n}".encode()), ("bin", b"\x00\xff")),
    )


def receipt(event_id: str) -> DeliveryReceipt:
    return DeliveryReceipt(
        event_id=event_id,
        topic="t",
        partition=2,
        offset=40,
        timestamp=1234,
        timestamp_type="CreateTime",
        log_start_offset=0,
        policy="replicated",
        acks="all",
        idempotent=True,
        confirmed=True,
        attempts=1,
        elapsed_ms=1.0,
        deadline_ms=5000,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/nested/messages.db")
    await store.open()
    yield store
    await store.close()


async def test_a_record_survives_reopening_with_everything_needed_to_resend(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    first = SqlStore(url)
    await first.open()
    stored = await first.record(
        message(1),
        origin=Origin.FAILED,
        policy="replicated",
        attempts=3,
        error_type="NotEnoughReplicasError",
        error="broker error",
    )
    await first.close()

    second = SqlStore(url)
    await second.open()
    again = await second.get(stored.id)
    await second.close()

    assert again is not None
    assert again.to_message() == message(1)
    assert (again.status, again.origin, again.attempts) == (Status.PENDING, Origin.FAILED, 3)
    assert again.error_type == "NotEnoughReplicasError"
    assert again.first_failed_at is not None
    assert again.created_at.tzinfo is not None


async def test_concurrent_records_get_distinct_increasing_sequence_numbers(
    store: SqlStore,
) -> None:
    stored = await asyncio.gather(
        *(store.record(message(n), origin=Origin.OUTBOX, policy="leader") for n in range(50))
    )

    assert len({s.seq for s in stored}) == 50
    listed = await store.list(status=Status.PENDING, limit=100)
    assert [r.seq for r in listed] == sorted(r.seq for r in listed)
    assert await store.count(Status.PENDING) == 50


async def test_delivered_records_keep_their_receipt(store: SqlStore) -> None:
    stored = await store.record(message(), origin=Origin.OUTBOX, policy="replicated")

    await store.mark_delivered(stored.id, receipt(stored.event_id))
    found = await store.find_event(stored.event_id)

    assert found is not None
    assert (found.status, found.partition, found.offset, found.timestamp) == (
        Status.DELIVERED,
        2,
        40,
        1234,
    )
    assert found.delivered_at is not None
    assert await store.list(status=Status.PENDING) == []


async def test_failed_replays_count_up_and_abandoned_records_can_be_requeued(
    store: SqlStore,
) -> None:
    stored = await store.record(message(), origin=Origin.FAILED, policy="replicated")

    await store.mark_failed(stored.id, error_type="X", error="x", abandon=False)
    await store.mark_failed(stored.id, error_type="Y", error="y", abandon=True)
    abandoned = await store.get(stored.id)
    requeued = await store.requeue([stored.id])
    pending = await store.get(stored.id)

    assert abandoned is not None
    assert pending is not None
    assert (abandoned.status, abandoned.replays, abandoned.error_type) == (
        Status.ABANDONED,
        2,
        "Y",
    )
    assert requeued == 1
    assert (pending.status, pending.replays) == (Status.PENDING, 0)


async def test_purge_removes_only_the_given_status(store: SqlStore) -> None:
    done = await store.record(message(1), origin=Origin.OUTBOX, policy="replicated")
    await store.record(message(2), origin=Origin.OUTBOX, policy="replicated")
    await store.mark_delivered(done.id, receipt(done.event_id))

    assert await store.purge(status=Status.DELIVERED) == 1
    assert await store.count() == 1
    assert await store.count(Status.PENDING) == 1


async def test_unknown_ids_are_none(store: SqlStore) -> None:
    assert await store.get("nope") is None
    assert await store.find_event("nope") is None


async def test_several_processes_can_create_the_same_new_database_at_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/shared/messages.db"
    script = (
        "import asyncio, sys\n"
        "from kafka_events.store import SqlStore\n"
        "from kafka_events.consumer import HandledEvents\n"
        "async def main() -> None:\n"
        "    for store in (SqlStore(sys.argv[1]), HandledEvents(sys.argv[1])):\n"
        "        await store.open()\n"
        "        await store.close()\n"
        "asyncio.run(main())\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, url, cwd=repo_root(), stderr=asyncio.subprocess.PIPE
        )
        for _ in range(6)
    ]
    async with asyncio.timeout(60):
        outcomes = [(await p.wait(), (await p.stderr.read()).decode()) for p in processes]  # type: ignore[union-attr]

    assert [code for code, _ in outcomes] == [0] * 6, [err for _, err in outcomes if err]
