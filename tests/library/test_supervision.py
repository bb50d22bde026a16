"""Supervised background tasks: a loop that dies is logged, counted and started again after a
growing pause; one that returns is done; `stop()` ends one that runs. And `problems()`, what
readiness probes report, names a reply reader or a relay that cannot do its work."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from kafka_events import KafkaEvents, MemoryStore, Policy, ReplyConfig
from kafka_events.supervision import Supervisor, TaskState
from kafka_events.testing import TestKafkaEvents
from tests.helpers.waiting import eventually


async def test_a_loop_that_dies_is_logged_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[float] = []
    states: list[TaskState] = []
    counter = Counter("restarts", "test", registry=CollectorRegistry())

    async def loop() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) <= 3:
            raise AttributeError("'list' object has no attribute 'get'")

    supervisor = Supervisor("the test loop", loop, backoff_initial_ms=20, restarts_counter=counter)

    async def observe() -> None:
        while True:
            states.append(supervisor.state)
            await asyncio.sleep(0.005)

    observer = asyncio.create_task(observe())
    with caplog.at_level(logging.ERROR, logger="kafka_events.supervision"):
        supervisor.start()
        assert supervisor.task is not None
        await asyncio.wait_for(supervisor.task, timeout=5)
    observer.cancel()

    assert len(runs) == 4
    assert (supervisor.restarts, supervisor.last_error, supervisor.state) == (
        3,
        "AttributeError",
        TaskState.STOPPED,
    )
    assert counter._value.get() == 3
    assert TaskState.RESTARTING in states
    pauses = [later - earlier for earlier, later in itertools.pairwise(runs)]
    assert pauses[2] > pauses[0]  # the pause grows
    assert caplog.text.count("the test loop failed; starting it again") == 3
    assert "AttributeError" in caplog.text  # with its traceback


async def test_stop_ends_a_loop_that_runs() -> None:
    started = asyncio.Event()

    async def loop() -> None:
        started.set()
        await asyncio.Event().wait()

    supervisor = Supervisor("forever", loop)
    supervisor.start()
    await asyncio.wait_for(started.wait(), timeout=5)
    await supervisor.stop(timeout_s=5)

    assert supervisor.state is TaskState.STOPPED
    assert supervisor.task is None


async def test_problems_name_a_reply_reader_that_does_not_read() -> None:
    kafka = KafkaEvents(
        store=MemoryStore(),
        policies={"orders": Policy()},
        replies=ReplyConfig(topic="orders.replies"),
    )
    with TestKafkaEvents(kafka, reply=lambda request: ("done", None)):
        async with kafka:
            replies = kafka.replies
            assert replies is not None

            async def reading() -> bool:
                return replies.ready

            await eventually(reading, timeout_s=5)
            healthy = kafka.problems()
            await replies.stop()  # as if it had died: not reading
            stopped = kafka.problems()
            kafka.relay.store_failing = True
            both = kafka.problems()

    assert healthy == []
    assert stopped == ["reply reader: stopped"]
    assert both == ["reply reader: stopped", "relay: the store cannot be written"]
