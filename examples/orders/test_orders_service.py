"""The order service's own routes, tested without a broker through the shipped test double."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import orders_service
import pytest
from asgi_lifespan import LifespanManager

from kafka_events.testing import TestKafkaEvents


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, TestKafkaEvents]]:
    with TestKafkaEvents(orders_service.kafka) as broker:
        async with (
            LifespanManager(orders_service.app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
            ) as http,
        ):
            yield http, broker


async def test_an_order_is_published_with_its_receipt(
    client: tuple[httpx.AsyncClient, TestKafkaEvents],
) -> None:
    http, broker = client

    answer = await http.post("/orders", json={"order_id": "o-1", "total_cents": 1250})

    assert answer.status_code == 202
    assert answer.json()["topic"] == "orders.placed"
    [record] = broker.published
    assert (record.key, json.loads(record.value)["total_cents"]) == (b"o-1", 1250)


async def test_an_order_the_broker_cannot_take_is_kept_for_replay(
    client: tuple[httpx.AsyncClient, TestKafkaEvents],
) -> None:
    http, broker = client
    broker.fail()

    answer = await http.post("/orders", json={"order_id": "o-2", "total_cents": 99})

    assert answer.status_code == 503
    assert answer.json()["record_id"] is not None
    assert broker.published == []
