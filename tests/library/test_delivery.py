"""The delivery service's bookkeeping: what is recorded, tracked, or refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import PolicyName
from kafka_events import KafkaConfig, Policy, Retry, StoreError, errors
from kafka_events.delivery import DeliveryService
from kafka_events.producer import KafkaPublisher
from kafka_events.store import SqlStore, Status
from kafka_events.testing import FakeProducer
from tests.library.test_store import message


class LockedStore(SqlStore):
    async def record(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("the store could not record the message: OperationalError")


def publisher_of(policy: Policy, producer: FakeProducer | None = None) -> KafkaPublisher:
    return KafkaPublisher(
        KafkaConfig(), policy, producer_factory=lambda: producer or FakeProducer()
    )


def delivery_with(publisher: KafkaPublisher, store: SqlStore, **hooks: Any) -> DeliveryService:
    return DeliveryService({PolicyName.REPLICATED.value: publisher}, store, **hooks)


async def test_an_outbox_that_cannot_store_refuses_with_store_unavailable(tmp_path: Path) -> None:
    store = LockedStore(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    await store.open()
    delivery = delivery_with(publisher_of(Policy(outbox=True)), store)

    with pytest.raises(errors.StoreUnavailable) as caught:
        await delivery.emit(message(1), policy=PolicyName.REPLICATED)
    await store.close()

    assert caught.value.record_id is None
    assert caught.value.sent is False


async def test_a_timeout_in_flight_is_recorded_and_handed_to_the_relay(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    await store.open()
    publisher = publisher_of(
        Policy(delivery_timeout_ms=200, retry=Retry(retries=0)), FakeProducer(never_ack=True)
    )
    await publisher.start()
    tracked: list[tuple[str, Any]] = []
    delivery = delivery_with(publisher, store, on_in_flight=lambda i, f: tracked.append((i, f)))

    with pytest.raises(errors.DeliveryTimeout) as caught:
        await delivery.emit(message(1), policy=PolicyName.REPLICATED)
    pending = await store.list(status=Status.PENDING, limit=10)
    await publisher.stop()
    await store.close()

    assert caught.value.sent is None  # a broker had it at the deadline
    assert caught.value.in_flight is not None
    assert [r.id for r in pending] == [caught.value.record_id]
    assert tracked == [(caught.value.record_id, caught.value.in_flight)]
