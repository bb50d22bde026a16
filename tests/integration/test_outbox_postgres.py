"""The outbox in the caller's own transaction, on a real PostgreSQL and a real broker: what a
commit stores survives the process that wrote it, and one row is published by one relay only."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.kafka import KafkaCluster
from kafka_events import KafkaConfig, KafkaEvents, Policy, ReplayConfig, SqlStore, Status, event
from tests.helpers.kafka import read_all
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.kafka

FAST_RELAY = ReplayConfig(interval_ms=100, backoff_max_ms=500)


@event(key="order_id", type="order.placed")
class OrderPlaced(BaseModel):
    order_id: str


def _kafka(bootstrap: str, url: str, *, replay: ReplayConfig = FAST_RELAY) -> KafkaEvents:
    return KafkaEvents(
        KafkaConfig(bootstrap_servers=bootstrap),
        store=SqlStore(url),
        policies={"orders": Policy()},
        replay=replay,
    )


# Commits outbox rows, says so, and waits to be killed: its relay is off, so nothing it stored
# can have been published by it.
_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from kafka_events import KafkaConfig, KafkaEvents, Policy, ReplayConfig, SqlStore, event
    from pydantic import BaseModel
    from sqlalchemy.ext.asyncio import create_async_engine

    @event(key="order_id", type="order.placed")
    class OrderPlaced(BaseModel):
        order_id: str

    async def main(bootstrap, url, topic):
        kafka = KafkaEvents(KafkaConfig(bootstrap_servers=bootstrap), store=SqlStore(url),
                            policies={"orders": Policy()}, replay=ReplayConfig(enabled=False))
        database = create_async_engine(url)
        async with kafka:
            for number in range(5):
                async with database.begin() as connection:
                    await kafka.add_to_outbox(connection, OrderPlaced(order_id=f"o-{number}"),
                                              topic=topic)
            print("committed", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_rows_committed_by_a_process_killed_before_its_relay_ran_are_delivered_after(
    kafka_broker: KafkaCluster, topic: str, postgres_url: str, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    with (tmp_path / "writer.log").open("wb") as log:
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WRITER,
            bootstrap,
            postgres_url,
            topic,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    assert writer.stdout is not None
    async with asyncio.timeout(60):
        line = await writer.stdout.readline()
    writer.send_signal(signal.SIGKILL)
    await writer.wait()

    async with _kafka(bootstrap, postgres_url) as restarted:

        async def delivered() -> bool:
            return await restarted.store.count(Status.DELIVERED) == 5

        await eventually(delivered, timeout_s=30)
    records = await read_all(bootstrap, topic, expected=5)

    assert line == b"committed\n"
    assert writer.returncode == -signal.SIGKILL
    assert sorted(r.key for r in records) == [f"o-{n}".encode() for n in range(5)]


async def test_two_relays_over_one_database_never_both_publish_a_row(
    kafka_broker: KafkaCluster, topic: str, postgres_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    first, second = _kafka(bootstrap, postgres_url), _kafka(bootstrap, postgres_url)
    database = create_async_engine(postgres_url)
    async with first, second:
        for number in range(40):  # each commit wakes one of the two relays
            writer = first if number % 2 else second
            async with database.begin() as connection:
                await writer.add_to_outbox(
                    connection, OrderPlaced(order_id=f"o-{number}"), topic=topic
                )

        async def drained() -> bool:
            return await first.store.count(Status.DELIVERED) == 40

        await eventually(drained, timeout_s=60)
        replaying = [first.relay.replaying, second.relay.replaying]
    await database.dispose()
    records = await read_all(bootstrap, topic, expected=40)

    assert sorted(replaying) == [False, True]  # one holds the lease, the other stands by
    assert await _written(bootstrap, topic) == 40  # nothing was published twice
    ids = [json.loads(r.value)["event_id"] for r in records]
    assert len(set(ids)) == 40


async def _written(bootstrap: str, topic: str) -> int:
    """How many records the topic holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]  # the `topic` fixture's
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
