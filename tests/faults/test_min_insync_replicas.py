"""The seed's three min.insync.replicas cases, acks=all, replication factor 3, real brokers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.config import PolicyName
from devtools.kafka import KafkaCluster
from tests.helpers.cluster import partition_layout, restore, survivors, wait_isr
from tests.helpers.kafka import create_topic, read_at
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


async def _topic(
    cluster: KafkaCluster, name: str, min_isr: int, replication_factor: int = 3
) -> tuple[str, int, int]:
    """A one-partition topic; returns it with its leader and one follower."""
    await create_topic(
        cluster.bootstrap_servers,
        name,
        partitions=1,
        replication_factor=replication_factor,
        config={"min.insync.replicas": str(min_isr)},
    )
    await wait_isr(cluster, name, replication_factor)
    (layout,) = (await partition_layout(cluster.bootstrap_servers, name)).values()
    follower = next(n for n in layout["replicas"] if n != layout["leader"])
    return name, layout["leader"], follower


@pytest.mark.parametrize(("min_isr", "status"), [(1, 202), (2, 503)])
async def test_case_2_min_isr_1_acknowledges_with_the_leader_alone(
    kafka_cluster: KafkaCluster, topic_name: str, min_isr: int, status: int
) -> None:
    # The ISR must shrink to the leader alone. Each node here is broker and controller, so
    # killing two of three would also lose the controller quorum (and with it any ISR
    # change): a replication-factor-2 topic with its one follower killed shows the same.
    topic, leader, follower = await _topic(
        kafka_cluster, topic_name, min_isr=min_isr, replication_factor=2
    )
    settings = make_settings(
        survivors(kafka_cluster, follower),
        topic,
        delivery_timeout_ms=3000,
        close_timeout_ms=1000,  # the 503 case leaves a batch the producer retries at shutdown
        replay={"enabled": False},
    )
    try:
        await asyncio.to_thread(kafka_cluster.kill_node, follower)
        await wait_isr(kafka_cluster, topic, 1)
        async with running_app(settings) as running:
            response = await running.client.post("/verification-emails", json=BODY)
        (layout,) = (await partition_layout(survivors(kafka_cluster, follower), topic)).values()
    finally:
        await restore(kafka_cluster)

    assert layout["isr"] == [leader]
    # min ISR 1: acks=all is satisfied by the leader alone (lost if it dies now);
    # min ISR 2: refused and recorded, nothing acknowledged on one copy
    assert response.status_code == status
    if status == 503:
        assert response.json()["record_id"] is not None


async def test_case_3_min_isr_3_with_a_broker_down_is_recorded_then_delivered(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    topic, _leader, follower = await _topic(kafka_cluster, topic_name, min_isr=3)
    settings = make_settings(
        survivors(kafka_cluster, follower),
        topic,
        delivery_timeout_ms=4000,
        replay={"interval_ms": 200, "backoff_max_ms": 500},
    )
    try:
        await asyncio.to_thread(kafka_cluster.kill_node, follower)
        await wait_isr(kafka_cluster, topic, 2)
        async with running_app(settings) as running:
            refused = await running.client.post("/verification-emails", json=BODY)
            body = refused.json()
            pending = (await running.client.get(f"/events/{body['event_id']}")).json()
            await asyncio.to_thread(kafka_cluster.start_node, follower)
            status: dict[str, Any] = {}

            async def delivered() -> bool:
                nonlocal status
                status = (await running.client.get(f"/events/{body['event_id']}")).json()
                return bool(status["status"] == "delivered")

            await eventually(delivered, timeout_s=60, interval_s=0.2)
    finally:
        await restore(kafka_cluster)

    assert refused.status_code == 503
    assert body["record_id"] == pending["record_id"]
    assert pending["status"] == "pending"
    record = await read_at(
        kafka_cluster.bootstrap_servers, topic, status["partition"], status["offset"]
    )
    assert json.loads(record.value)["event_id"] == body["event_id"]


async def test_case_3_without_idempotence_the_error_surfaces_and_is_retried(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    # Without idempotence aiokafka gives up on a batch after request_timeout_ms, so the
    # broker's NOT_ENOUGH_REPLICAS reaches our retry policy instead of the deadline.
    topic, _, follower = await _topic(kafka_cluster, topic_name, min_isr=3)
    settings = make_settings(
        survivors(kafka_cluster, follower),
        topic,
        policy=PolicyName.LEADER,
        acks="all",
        request_timeout_ms=500,
        delivery_timeout_ms=8000,
        retry={"retries": 2, "initial_retry_time_ms": 100},
        replay={"enabled": False},
    )
    try:
        await asyncio.to_thread(kafka_cluster.kill_node, follower)
        await wait_isr(kafka_cluster, topic, 2)
        async with running_app(settings) as running:
            refused = await running.client.post("/verification-emails", json=BODY)
            record = await running.state.store.get(refused.json()["record_id"])
    finally:
        await restore(kafka_cluster)

    assert refused.status_code == 503
    assert record is not None
    assert record.error_type == "NotEnoughReplicasError"
    assert record.attempts == 3  # the first attempt and two retries
