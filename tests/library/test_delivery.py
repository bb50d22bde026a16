"""The delivery service's bookkeeping: what is recorded, tracked, or refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from app.config import PolicyName
from kafka_events import StoreError, errors
from kafka_events.delivery import DeliveryService
from kafka_events.messages import OutgoingMessage
from kafka_events.producer import KafkaPublisher
from kafka_events.store import SqlStore, Status
from tests.library.test_store import message


class FakePublisher:
    traced = False

    def __init__(self, *, outbox: bool = False, error: errors.PublishError | None = None) -> None:
        self.outbox = outbox
        self.error = error

    async def publish(self, msg: OutgoingMessage) -> Any:
        assert self.error is not None
        raise self.error


class LockedStore(SqlStore):
    async def record(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("the store could not record the message: OperationalError")


def delivery_with(publisher: FakePublisher, store: SqlStore, **hooks: Any) -> DeliveryService:
    publishers = {p.value: cast(KafkaPublisher, publisher) for p in PolicyName}
    return DeliveryService(publishers, store, **hooks)


async def test_an_outbox_that_cannot_store_refuses_with_store_unavailable(tmp_path: Path) -> None:
    store = LockedStore(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    await store.open()
    delivery = delivery_with(FakePublisher(outbox=True), store)

    with pytest.raises(errors.StoreUnavailable) as caught:
        await delivery.emit(message(1), policy=PolicyName.REPLICATED)
    await store.close()

    assert caught.value.record_id is None
    assert caught.value.sent is False


async def test_a_timeout_in_flight_is_recorded_and_handed_to_the_relay(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    await store.open()
    error = errors.DeliveryTimeout("late", event_id="e-1", sent=None)
    error.in_flight = asyncio.get_running_loop().create_future()
    tracked: list[tuple[str, Any]] = []
    delivery = delivery_with(
        FakePublisher(error=error), store, on_in_flight=lambda i, f: tracked.append((i, f))
    )

    with pytest.raises(errors.DeliveryTimeout) as caught:
        await delivery.emit(message(1), policy=PolicyName.REPLICATED)
    pending = await store.list(status=Status.PENDING, limit=10)
    await store.close()

    assert [r.id for r in pending] == [caught.value.record_id]
    assert tracked == [(caught.value.record_id, error.in_flight)]
