"""Small, bounded helpers over a `devtools.kafka.KafkaCluster`: topics, leaders, ISR."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from devtools.kafka import KafkaCluster


def running_brokers(cluster: KafkaCluster) -> str:
    """Bootstrap servers of the nodes that run now."""
    return ",".join(cluster.broker_address(n) for n in cluster.node_ids if cluster.is_running(n))


async def create_topic(
    cluster: KafkaCluster, name: str, *, partitions: int = 3, timeout_s: float = 30
) -> None:
    """A topic replicated on every node (min.insync.replicas is the cluster's)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=running_brokers(cluster), request_timeout_ms=10000
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=partitions,
                        replication_factor=len(cluster.node_ids),
                    )
                ]
            )
    finally:
        await admin._client.close()  # close() is a no-op when start() failed half-way


async def partition_layout(cluster: KafkaCluster, topic: str) -> dict[int, dict[str, Any]]:
    """Leader, replicas and ISR of each partition, asked of the nodes that run (20 tries)."""
    for attempt in range(20):
        admin = AIOKafkaAdminClient(
            bootstrap_servers=running_brokers(cluster), request_timeout_ms=5000
        )
        try:
            async with asyncio.timeout(10):
                await admin.start()
                (description,) = await admin.describe_topics([topic])
            return {p["partition"]: p for p in description["partitions"]}
        except (KafkaError, OSError, TimeoutError):
            if attempt == 19:
                raise
        finally:
            await admin._client.close()  # close() is a no-op when start() failed half-way
        await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def leader_of(cluster: KafkaCluster, topic: str, partition: int) -> int:
    leader = (await partition_layout(cluster, topic))[partition]["leader"]
    if not isinstance(leader, int) or leader < 0:
        raise RuntimeError(f"partition {partition} of {topic} has no leader")
    return leader


async def wait_isr(cluster: KafkaCluster, topic: str, size: int, *, timeout_s: float) -> bool:
    """Wait until every partition has an ISR of `size`; False if that took over `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        layout = await partition_layout(cluster, topic)
        if all(len(p["isr"]) == size for p in layout.values()):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.25)


async def restore(cluster: KafkaCluster) -> list[int]:
    """Start every node that is down; returns those started."""
    started = []
    if not any(cluster.is_running(n) for n in cluster.node_ids):
        await asyncio.to_thread(cluster.start)  # a quorum must start together
        return list(cluster.node_ids)
    for node in cluster.node_ids:
        if not cluster.is_running(node):
            await asyncio.to_thread(cluster.start_node, node)
            started.append(node)
    return started
