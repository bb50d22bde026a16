"""The app against three brokers (replication factor 3, min.insync.replicas=2)."""

from __future__ import annotations

import asyncio
import json

import pytest

from devtools.kafka import KafkaCluster
from tests.helpers.cluster import partition_layout
from tests.helpers.kafka import create_topic, read_at
from tests.helpers.service import make_settings, running_app

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


async def test_acks_all_is_acknowledged_by_the_in_sync_replicas(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name, partitions=1, replication_factor=3)
    async with running_app(make_settings(bootstrap, topic)) as running:
        response = await running.client.post("/verification-emails", json=BODY)

    assert response.status_code == 202
    receipt = response.json()
    layout = await partition_layout(bootstrap, topic)
    assert sorted(layout[0]["isr"]) == [1, 2, 3]
    record = await read_at(bootstrap, topic, receipt["partition"], receipt["offset"])
    assert json.loads(record.value)["event_id"] == receipt["event_id"]


async def test_with_one_follower_down_acks_all_still_succeeds(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name, partitions=1, replication_factor=3)
    layout = await partition_layout(bootstrap, topic)
    follower = next(n for n in layout[0]["replicas"] if n != layout[0]["leader"])
    # the app connects through the brokers that stay up
    survivors = ",".join(
        kafka_cluster.broker_address(n) for n in kafka_cluster.node_ids if n != follower
    )

    await asyncio.to_thread(kafka_cluster.kill_node, follower)
    # acks=all waits for the whole ISR: writes stall until the dead follower is fenced and
    # dropped from it (broker.session.timeout.ms, 3 s here); the deadline must outlast that.
    settings = make_settings(survivors, topic, delivery_timeout_ms=15000)
    try:
        async with running_app(settings) as running:
            responses = [
                await running.client.post("/verification-emails", json=BODY) for _ in range(5)
            ]
        layout = await partition_layout(survivors, topic)
    finally:
        await asyncio.to_thread(kafka_cluster.start_node, follower)

    assert [r.status_code for r in responses] == [202] * 5
    assert follower not in layout[0]["isr"]
    assert len(layout[0]["isr"]) == 2
    offsets = [r.json()["offset"] for r in responses]
    assert offsets == list(range(5))
    for receipt in (r.json() for r in responses):
        record = await read_at(survivors, topic, receipt["partition"], receipt["offset"])
        assert json.loads(record.value)["event_id"] == receipt["event_id"]
