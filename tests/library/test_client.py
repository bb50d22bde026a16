"""`KafkaEvents`: named policies and their producers, the lifecycle, emit and the outbox in the
caller's transaction, with the shipped test double instead of a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kafka_events import (
    Acks,
    ConfigurationError,
    KafkaConfig,
    KafkaEvents,
    MemoryStore,
    OutgoingMessage,
    Policy,
    ProducerConfig,
    PublisherStateError,
    QueuedReceipt,
    RepliesUnavailable,
    ReplyConfig,
    SqlStore,
    Status,
    event,
)
from kafka_events.client import State
from kafka_events.testing import TestKafkaEvents
from tests.helpers.waiting import eventually


@event(topic="orders.placed", key="order_id", type="order.placed")
class OrderPlaced(BaseModel):
    order_id: str
    total_cents: int


def test_policies_that_differ_only_in_deadline_and_retries_share_one_producer() -> None:
    kafka = KafkaEvents(
        store=MemoryStore(),
        policies={
            "fast": Policy(delivery_timeout_ms=1000),
            "patient": Policy(delivery_timeout_ms=30000, ordered_per_key=False),
            "loose": Policy(acks=Acks.LEADER, enable_idempotence=False),
        },
    )

    assert [p.name for p in kafka.producers] == ["fast", "loose"]
    assert kafka.publishers["fast"].producer is kafka.publishers["patient"].producer
    assert kafka.publishers["loose"].producer is not kafka.publishers["fast"].producer
    assert kafka.default_policy == "fast"  # the first, when none is called `replicated`


@pytest.mark.parametrize(
    ("policies", "fragment"),
    [
        ({}, "at least one delivery policy"),
        ({"Orders!": Policy()}, "policy name 'Orders!'"),
        ({"slow": Policy(delivery_timeout_ms=50)}, "`producer.linger_ms` (100)"),
        (
            {"a": Policy(transactional_id="t-1"), "b": Policy(transactional_id="t-1")},
            "its own `transactional_id`",
        ),
    ],
)
def test_policies_that_cannot_work_are_refused_at_construction(
    policies: dict[str, Policy], fragment: str
) -> None:
    kafka = KafkaConfig(producer=ProducerConfig(linger_ms=100))

    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        KafkaEvents(kafka, store=MemoryStore(), policies=policies)


async def test_it_runs_twice_with_new_clients_and_refuses_a_second_start() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"orders": Policy()})
    with TestKafkaEvents(kafka) as broker:
        async with kafka:
            first = kafka.producers[0]
            with pytest.raises(PublisherStateError, match="running already"):
                await kafka.start()
            await kafka.emit(OrderPlaced(order_id="o-1", total_cents=1), policy="orders")
        assert kafka.state is State.STOPPED
        async with kafka:  # a lifespan that runs again (tests, a reloading server)
            await kafka.emit(OrderPlaced(order_id="o-2", total_cents=2))

    assert kafka.producers[0] is not first
    assert [m.key for m in broker.published] == [b"o-1", b"o-2"]


async def test_an_emitted_event_is_keyed_typed_json_with_its_receipt() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"orders": Policy()})
    with TestKafkaEvents(kafka) as broker:
        async with kafka:
            receipt = await kafka.emit(OrderPlaced(order_id="o-1", total_cents=1250))

    [record] = broker.published
    assert (receipt.topic, receipt.policy, receipt.event_id) == (
        "orders.placed",
        "orders",
        record.event_id,
    )
    assert record.key == b"o-1"
    body = json.loads(record.value)
    assert (body["event_type"], body["total_cents"]) == ("order.placed", 1250)
    assert dict(record.headers)["event_type"] == b"order.placed"


async def test_a_failed_emit_is_kept_with_its_record_id_and_replayed_when_it_recovers() -> None:
    store = MemoryStore()
    kafka = KafkaEvents(store=store, policies={"orders": Policy()})
    with TestKafkaEvents(kafka) as broker:
        async with kafka:
            broker.fail()
            with pytest.raises(Exception) as failed:  # noqa: PT011 - checked below
                await kafka.emit(OrderPlaced(order_id="o-1", total_cents=1))
            kept = await store.get(failed.value.record_id)  # type: ignore[attr-defined]
            broker.recover()

            async def replayed() -> bool:
                return bool(broker.published)

            await eventually(replayed, timeout_s=10)

    assert type(failed.value).__name__ == "BrokerUnavailable"
    assert kept is not None
    assert kept.event_id == broker.published[0].event_id


async def test_request_reply_without_a_reply_topic_is_refused_before_sending() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"orders": Policy()})
    with TestKafkaEvents(kafka) as broker:
        async with kafka:
            with pytest.raises(RepliesUnavailable):
                await kafka.request(OrderPlaced(order_id="o-1", total_cents=1))

    assert broker.published == []


orders = Table("orders", MetaData(), Column("total_cents", Integer, nullable=False))


async def _order_refused_after_writing(database: AsyncEngine, kafka: KafkaEvents) -> None:
    async with database.begin() as connection:
        await connection.execute(insert(orders).values(total_cents=0))
        await kafka.add_to_outbox(connection, OrderPlaced(order_id="o-2", total_cents=0))
        raise RuntimeError("refused by the business rule")  # after both were written


async def test_the_outbox_in_the_callers_transaction_commits_and_rolls_back_with_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    kafka = KafkaEvents(store=SqlStore(url), policies={"orders": Policy()})
    database = create_async_engine(url)
    async with database.begin() as connection:
        await connection.run_sync(orders.metadata.create_all)
    with TestKafkaEvents(kafka) as broker:
        async with kafka:
            async with database.begin() as connection:
                await connection.execute(insert(orders).values(total_cents=5))
                queued = await kafka.add_to_outbox(
                    connection, OrderPlaced(order_id="o-1", total_cents=5)
                )
            with pytest.raises(RuntimeError, match="refused"):
                await _order_refused_after_writing(database, kafka)

            async def delivered() -> bool:
                return await kafka.store.count(Status.DELIVERED) == 1

            await eventually(delivered, timeout_s=10)  # the relay is woken by the commit
            stored = await kafka.store.list(status=None)
    async with database.connect() as connection:
        rows = (await connection.execute(select(orders.c.total_cents))).scalars().all()
    await database.dispose()

    assert isinstance(queued, QueuedReceipt)
    assert rows == [5]
    assert [m.key for m in broker.published] == [b"o-1"]
    assert [(r.id, r.status) for r in stored] == [(queued.record_id, Status.DELIVERED)]


async def test_the_outbox_in_the_callers_transaction_needs_a_sql_store() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"orders": Policy()})
    database = create_async_engine("sqlite+aiosqlite:///:memory:")
    async with database.connect() as connection:
        with pytest.raises(ConfigurationError, match="SqlStore"):
            await kafka.add_to_outbox(connection, OrderPlaced(order_id="o-1", total_cents=1))
    await database.dispose()


async def test_request_reply_is_answered_by_the_test_doubles_reply_function() -> None:
    kafka = KafkaEvents(
        store=MemoryStore(),
        policies={"orders": Policy()},
        replies=ReplyConfig(topic="orders.replies", timeout_ms=2000),
    )
    asked: list[bytes | None] = []

    def answer(request: OutgoingMessage) -> tuple[str, str | None]:
        asked.append(request.key)
        return ("refused", "out of stock") if request.key == b"o-2" else ("done", None)

    with TestKafkaEvents(kafka, reply=answer):
        async with kafka:
            replies = kafka.replies
            assert replies is not None

            async def reading() -> bool:
                return replies.ready

            await eventually(reading, timeout_s=5)  # the reader starts in the background
            receipt, reply = await kafka.request(OrderPlaced(order_id="o-1", total_cents=1))
            _, refused = await kafka.request(OrderPlaced(order_id="o-2", total_cents=2))

    assert asked == [b"o-1", b"o-2"]
    assert (reply.status, reply.detail, reply.event_id) == ("done", None, receipt.event_id)
    assert (refused.status, refused.detail) == ("refused", "out of stock")
