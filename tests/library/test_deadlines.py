"""The publisher's shared deadline timer: `asyncio.timeout`'s semantics, one timer for all."""

from __future__ import annotations

import asyncio

import pytest

from kafka_events.producer.deadlines import Deadlines


async def test_a_scope_that_ends_in_time_raises_nothing_and_leaves() -> None:
    deadlines = Deadlines(0.5)
    with deadlines.scope() as scope:
        await asyncio.sleep(0)
        assert len(deadlines) == 1
    assert not scope.expired()
    assert len(deadlines) == 0


async def test_every_deadline_fires_on_time_in_the_order_entered() -> None:
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    fired: list[tuple[int, float]] = []

    async def wait(number: int) -> None:
        started = loop.time()
        with pytest.raises(TimeoutError), deadlines.scope():
            await asyncio.sleep(10)
        fired.append((number, loop.time() - started))

    tasks = []
    for number in range(5):
        tasks.append(asyncio.create_task(wait(number)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert [number for number, _ in fired] == list(range(5))
    assert all(0.045 <= elapsed < 0.5 for _, elapsed in fired), fired  # not early, not lost
    assert len(deadlines) == 0


async def test_the_timer_is_armed_again_when_the_oldest_scope_ends_first() -> None:
    deadlines = Deadlines(0.05)

    async def quick() -> None:
        with deadlines.scope():
            await asyncio.sleep(0.001)

    async def slow() -> None:
        with deadlines.scope():
            await asyncio.sleep(10)

    first = asyncio.create_task(quick())
    await asyncio.sleep(0.02)
    second = asyncio.create_task(slow())
    await first
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await second
    # the second scope's own deadline, not the first's (which passed without it)
    assert asyncio.get_running_loop().time() - started >= 0.02


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(10)

    async def wait() -> None:
        with deadlines.scope():
            await asyncio.sleep(10)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_an_outer_deadline_passes_through_an_inner_one() -> None:
    outer, inner = Deadlines(0.02), Deadlines(10)
    with pytest.raises(TimeoutError), outer.scope() as outer_scope, inner.scope() as inner_scope:
        await asyncio.sleep(10)
    assert outer_scope.expired()
    assert not inner_scope.expired()


async def test_an_inner_deadline_is_the_inner_scopes_and_the_task_goes_on() -> None:
    outer, inner = Deadlines(10), Deadlines(0.02)
    with outer.scope() as outer_scope:
        with pytest.raises(TimeoutError), inner.scope() as inner_scope:
            await asyncio.sleep(10)
        await asyncio.sleep(0.001)  # not cancelled any more
    assert inner_scope.expired()
    assert not outer_scope.expired()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_a_scope_needs_a_task() -> None:
    deadlines = Deadlines(1)
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []

    def outside_a_task() -> None:
        try:
            deadlines.scope()
        except RuntimeError as error:
            errors.append(error)

    loop.call_soon(outside_a_task)
    await asyncio.sleep(0.01)
    assert len(errors) == 1
