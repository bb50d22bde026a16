"""The relay's rules (order, stop at the first failure, abandon), on a real SQLite store.

The publishers are real, over the shipped in-memory producer: what is tested is the relay's
bookkeeping; publishing to a real broker is in tests/integration/test_failures.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError  # type: ignore[import-untyped]

from app import logs
from app.config import PolicyName, ReplaySettings
from kafka_events import KafkaConfig, Policy, Retry, errors
from kafka_events.messages import OutgoingMessage
from kafka_events.producer import KafkaPublisher
from kafka_events.store import Origin, SqlStore, Status
from kafka_events.store.lease import FileLease, Held
from kafka_events.store.relay import Relay
from kafka_events.testing import FakeProducer
from tests.helpers.waiting import eventually
from tests.library.test_store import message, receipt


class Broker:
    """Publishers over in-memory producers that fail the records named in `outcomes` with the
    Kafka error given, and note each attempt's event id and the log ids bound meanwhile."""

    def __init__(self, outcomes: dict[str, Exception | None]) -> None:
        self.outcomes = outcomes
        self.published: list[str] = []
        self.log_ids: list[tuple[str | None, str | None]] = []  # bound while publishing

    def _before_send(self, record: OutgoingMessage) -> BaseException | None:
        self.published.append(record.event_id)
        self.log_ids.append((logs.event_id.get(), logs.correlation_id.get()))
        return self.outcomes.get(record.event_id)

    async def publishers(self) -> dict[str, KafkaPublisher]:
        """One started publisher per policy name (no retries: a failure is the relay's)."""
        publishers = {
            p.value: KafkaPublisher(
                KafkaConfig(),
                Policy(retry=Retry(retries=0)),
                name=p.value,
                producer_factory=lambda: FakeProducer(before_send=self._before_send),
            )
            for p in PolicyName
        }
        for publisher in publishers.values():
            await publisher.start()
        return publishers


async def relay_for(store: SqlStore, broker: Broker, max_attempts: int = 3) -> Relay:
    settings = ReplaySettings(max_attempts=max_attempts, batch_size=10)
    return Relay(store, await broker.publishers(), settings)


async def _record(store: SqlStore, *numbers: int, policy: str = "replicated") -> None:
    for n in numbers:
        await store.record(message(n), origin=Origin.FAILED, policy=policy)


async def test_publishes_pending_records_oldest_first(store: SqlStore) -> None:
    await _record(store, 1, 2, 3)
    publisher = Broker({})

    result = await (await relay_for(store, publisher)).run_round()

    assert publisher.published == ["e-1", "e-2", "e-3"]
    assert result.delivered == 3
    assert await store.count(Status.DELIVERED) == 3


async def test_log_lines_of_a_replay_carry_the_event_and_correlation_ids(
    store: SqlStore,
) -> None:
    traced = message(1)
    headers = (*traced.headers, (logs.KAFKA_CORRELATION_HEADER, b"req-42"))
    await store.record(
        OutgoingMessage(
            topic=traced.topic,
            value=traced.value,
            key=traced.key,
            event_id=traced.event_id,
            headers=headers,
        ),
        origin=Origin.FAILED,
        policy="replicated",
    )
    await _record(store, 2)  # no correlation id
    publisher = Broker({})

    await (await relay_for(store, publisher)).run_round()

    assert publisher.log_ids == [("e-1", "req-42"), ("e-2", None)]
    assert (logs.event_id.get(), logs.correlation_id.get()) == (None, None)  # unbound after


async def test_a_failure_stops_the_round_so_order_is_kept(store: SqlStore) -> None:
    await _record(store, 1, 2, 3)
    publisher = Broker({"e-2": KafkaConnectionError("down")})

    result = await (await relay_for(store, publisher)).run_round()

    assert publisher.published == ["e-1", "e-2"]
    assert (result.delivered, result.failed) == (1, 1)
    pending = await store.list(status=Status.PENDING)
    assert [r.event_id for r in pending] == ["e-2", "e-3"]
    assert pending[0].replays == 1


async def test_hopeless_records_are_abandoned_and_do_not_block_the_rest(
    store: SqlStore,
) -> None:
    await _record(store, 1, 2)
    publisher = Broker({"e-1": TopicAuthorizationFailedError()})

    result = await (await relay_for(store, publisher)).run_round()

    assert (result.abandoned, result.delivered) == (1, 1)
    abandoned = await store.list(status=Status.ABANDONED)
    assert [(r.event_id, r.error_type) for r in abandoned] == [
        ("e-1", "TopicAuthorizationFailedError")
    ]


async def test_a_record_is_abandoned_after_max_attempts(store: SqlStore) -> None:
    await _record(store, 1)
    publisher = Broker({"e-1": KafkaConnectionError("down")})
    relay = await relay_for(store, publisher, max_attempts=3)

    outcomes = [await relay.run_round() for _ in range(4)]

    assert [o.failed for o in outcomes] == [1, 1, 0, 0]
    assert outcomes[2].abandoned == 1
    assert len(publisher.published) == 3  # nothing after it was abandoned
    assert await store.count(Status.ABANDONED) == 1


async def test_a_record_of_an_unknown_policy_is_abandoned(store: SqlStore) -> None:
    await _record(store, 1, policy="gone")

    result = await (await relay_for(store, Broker({}))).run_round()

    assert result.abandoned == 1
    (record,) = await store.list(status=Status.ABANDONED)
    assert record.error_type == "UnknownPolicy"


async def _tracked(store: SqlStore, n: int) -> tuple[Relay, Broker, str, Any]:
    await _record(store, n, n + 1)
    (first, _) = await store.list(status=Status.PENDING, limit=2)
    broker = Broker({})
    relay = await relay_for(store, broker)
    late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    relay.track(first.id, late)
    return relay, broker, first.id, late


async def test_a_record_still_in_flight_is_not_sent_again(store: SqlStore) -> None:
    relay, publisher, record_id, _late = await _tracked(store, 1)

    await relay.run_round()

    assert publisher.published == ["e-2"]  # e-1 waits for its earlier attempt
    assert relay.in_flight == 1
    record = await store.get(record_id)
    assert record is not None
    assert record.status is Status.PENDING


async def test_a_late_acknowledgement_marks_the_record_delivered(store: SqlStore) -> None:
    relay, publisher, record_id, late = await _tracked(store, 1)

    late.set_result(receipt("e-1"))
    await relay.settle_late()
    await relay.run_round()

    record = await store.get(record_id)
    assert record is not None
    assert record.status is Status.DELIVERED
    assert (record.partition, record.offset) == (2, 40)
    assert relay.acknowledged_late == 1
    assert "e-1" not in publisher.published  # never sent twice


async def test_settling_waits_for_an_acknowledgement_that_just_arrived(
    store: SqlStore,
) -> None:
    # At shutdown the producers' last flush acknowledges attempts just before the store closes.
    relay, _publisher, record_id, late = await _tracked(store, 1)

    late.set_result(receipt("e-1"))
    await relay.settle_late()  # no turn of the loop in between

    record = await store.get(record_id)
    assert record is not None
    assert record.status is Status.DELIVERED
    assert relay.acknowledged_late == 1


async def test_a_late_failure_releases_the_record_for_replay(store: SqlStore) -> None:
    relay, publisher, _record_id, late = await _tracked(store, 1)

    late.set_exception(errors.BrokerUnavailable("gone", event_id="e-1"))
    await relay.run_round()

    assert publisher.published == ["e-1", "e-2"]
    assert relay.in_flight == 0


# --- a store that cannot be written --------------------------------------------------------


class Unwritable:
    """Makes `store.mark_delivered` fail (as a full or locked database does) while `failing`."""

    def __init__(self, store: SqlStore) -> None:
        self.failing = True
        mark = store.mark_delivered

        async def mark_delivered(record_id: str, receipt: Any) -> None:
            if self.failing:
                raise errors.StoreError("the store could not mark: OperationalError")
            await mark(record_id, receipt)

        store.mark_delivered = mark_delivered  # type: ignore[method-assign]


async def test_an_acknowledged_record_is_never_republished_while_the_store_cannot_mark_it(
    store: SqlStore,
) -> None:
    await _record(store, 1, 2, 3)
    broker = Broker({})
    relay = await relay_for(store, broker)
    unwritable = Unwritable(store)

    await relay.run_round()
    await relay.run_round()  # the store still fails: its write is retried, not the publish
    held, failing = relay.unmarked, relay.store_failing
    unwritable.failing = False
    await relay.run_round()

    assert broker.published == ["e-1", "e-2", "e-3"]  # the backlog was not held behind e-1
    assert (held, failing) == (3, True)
    assert (relay.unmarked, relay.store_failing) == (0, False)
    assert await store.count(Status.PENDING) == 0
    assert await store.count(Status.DELIVERED) == 3


async def test_the_acknowledgements_held_for_an_unwritable_store_are_bounded(
    store: SqlStore,
) -> None:
    await _record(store, *range(1, 26))
    broker = Broker({})
    relay = await relay_for(store, broker)  # batch_size=10: at most 20 held
    unwritable = Unwritable(store)

    for _ in range(4):
        await relay.run_round()
    published_while_failing = len(broker.published)
    unwritable.failing = False
    for _ in range(3):
        await relay.run_round()

    assert (published_while_failing, relay.unmarked) == (20, 0)
    assert sorted(broker.published) == sorted(f"e-{n}" for n in range(1, 26))  # each once
    assert await store.count(Status.DELIVERED) == 25


async def test_a_late_acknowledgement_the_store_cannot_take_is_not_replayed(
    store: SqlStore,
) -> None:
    relay, publisher, record_id, late = await _tracked(store, 1)
    unwritable = Unwritable(store)

    late.set_result(receipt("e-1"))
    await relay.settle_late()
    await relay.run_round()
    unwritable.failing = False
    await relay.run_round()

    assert publisher.published == ["e-2"]  # e-1 was acknowledged late: never sent again
    record = await store.get(record_id)
    assert record is not None
    assert record.status is Status.DELIVERED


# --- one relay replays per store --------------------------------------------------------------


async def test_a_file_lease_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = FileLease(tmp_path / "x.relay-lock"), FileLease(tmp_path / "x.relay-lock")

    assert (await first.acquire(), await second.acquire()) == (True, False)
    assert await first.acquire()  # kept
    await first.release()
    assert (await second.acquire(), await first.acquire()) == (True, False)
    await second.release()


def test_each_store_gets_the_lease_that_fits_it() -> None:
    assert isinstance(SqlStore("sqlite+aiosqlite:///:memory:").lease(), Held)
    lease = SqlStore("sqlite+aiosqlite:////srv/data/messages.db").lease()
    assert isinstance(lease, FileLease)
    assert lease._path == Path("/srv/data/messages.db.relay-lock")


async def _published_all(store: SqlStore) -> bool:
    return await store.count(Status.PENDING) == 0


async def test_of_two_relays_over_one_store_one_replays_and_the_other_takes_over(
    tmp_path: Path,
) -> None:
    # Two processes' relays, each with its own store connection to the same SQLite file.
    url = f"sqlite+aiosqlite:///{tmp_path}/messages.db"
    stores = [SqlStore(url), SqlStore(url)]
    for each in stores:
        await each.open()
    publishers = [Broker({}), Broker({})]
    fast = ReplaySettings(interval_ms=20, batch_size=10)
    relays = [
        Relay(each, await broker.publishers(), fast)
        for each, broker in zip(stores, publishers, strict=True)
    ]
    try:
        for relay in relays:
            relay.start()
        await _record(stores[0], *range(1, 6))
        await eventually(lambda: _published_all(stores[0]), timeout_s=10)
        [leader] = [i for i, relay in enumerate(relays) if relay.replaying]
        other = 1 - leader
        first_round = (len(publishers[leader].published), len(publishers[other].published))

        await relays[leader].stop()  # its process stops: the other relay takes over
        await _record(stores[other], *range(6, 9))
        await eventually(lambda: _published_all(stores[other]), timeout_s=10)
    finally:
        for relay in relays:
            await relay.stop()
        for each in stores:
            await each.close()

    assert first_round == (5, 0)  # each record once, by the relay that holds the lease
    assert publishers[other].published == ["e-6", "e-7", "e-8"]
    assert len(publishers[leader].published) == 5
