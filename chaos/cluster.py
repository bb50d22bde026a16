"""Small, bounded helpers over a `devtools.kafka.KafkaCluster`: topics, leaders, ISR, and the
routes of a proxied cluster (`KafkaCluster(proxied=True)`) served by a `FaultProxy`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.cluster import ClusterMetadata  # type: ignore[import-untyped]
from aiokafka.conn import create_conn  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]

from devtools.faultproxy import FaultProxy
from devtools.kafka import KafkaCluster
from devtools.kafka.cluster import BROKER_LINK, CLIENT_LINK, CONTROLLER_LINK

ISR_TIMEOUT_S = 90.0
# a cut-off or paused leader is replaced within: KRaft's fetch timeout and election, then the
# broker session (3 s here) on the new controller; bounded well above that
FAILOVER_TIMEOUT_S = 30.0
# a dead or cut-off broker is fenced after 3 s instead of Kafka's 9 s: shorter runs, same story
FAST_FENCING = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


def running_brokers(cluster: KafkaCluster) -> str:
    """Bootstrap servers of the nodes that run now."""
    return ",".join(cluster.broker_address(n) for n in cluster.node_ids if cluster.is_running(n))


def serve_links(cluster: KafkaCluster, proxy: FaultProxy) -> None:
    """Every route of a proxied cluster through `proxy` (before the cluster starts)."""
    for link in cluster.links():
        proxy.add(link.name, link.listen, link.upstream)


def start_proxied(
    workdir: Path, *, extra_properties: Mapping[str, str] = FAST_FENCING
) -> tuple[KafkaCluster, FaultProxy]:
    """A fault proxy, then a proxied 3-node cluster behind it (blocking; none left on failure)."""
    proxy = FaultProxy(workdir / "proxy")
    cluster = KafkaCluster(
        workdir / "kafka", nodes=3, proxied=True, extra_properties=extra_properties
    )
    proxy.start()
    try:
        serve_links(cluster, proxy)
        cluster.start()
    except BaseException:
        proxy.stop()
        raise
    return cluster, proxy


def stop_proxied(cluster: KafkaCluster, proxy: FaultProxy) -> None:
    """Every node stopped (resumed first, if paused), then the proxy."""
    try:
        resume_nodes(cluster)
        cluster.stop()
    finally:
        proxy.stop()


def client_links(cluster: KafkaCluster) -> list[str]:
    """The routes from clients (the app, the chaos driver) to every broker."""
    return [link.name for link in cluster.links() if link.kind == CLIENT_LINK]


def peer_links(
    cluster: KafkaCluster, *, kinds: Iterable[str] = (BROKER_LINK, CONTROLLER_LINK)
) -> list[str]:
    """The routes between nodes (inter-broker and KRaft), both ways."""
    chosen = set(kinds)
    return [link.name for link in cluster.links() if link.kind in chosen]


def isolation_links(cluster: KafkaCluster, node: int) -> list[str]:
    """The routes between `node` and every other node, both ways (clients still reach it)."""
    return [
        link.name
        for link in cluster.links()
        if link.kind in (BROKER_LINK, CONTROLLER_LINK) and node in (link.source, link.target)
    ]


def pause_node(cluster: KafkaCluster, node: int) -> int:
    """SIGSTOP the node's JVM (it keeps its sockets, answers nothing); returns its pid."""
    pid = cluster.pid(node)
    if pid is None:
        raise RuntimeError(f"node {node} is not running")
    os.kill(pid, signal.SIGSTOP)
    return pid


def resume_nodes(cluster: KafkaCluster) -> None:
    """SIGCONT every running node (harmless for one that was not paused)."""
    for node in cluster.node_ids:
        pid = cluster.pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


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


async def leader_seen_by(
    cluster: KafkaCluster, node: int, topic: str, partition: int
) -> int | None:
    """The leader of `partition` in `node`'s own metadata, asked on its own listener (not
    through the proxy: a side of a partition can be asked what it sees); None if unknown."""
    host, port = cluster.direct_address(node).rsplit(":", 1)
    conn: Any = None
    try:
        async with asyncio.timeout(10):
            conn = await create_conn(host, int(port), request_timeout_ms=5000)
            response = await conn.send(MetadataRequest([topic]))
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        if conn is not None:
            conn.close()
    metadata = ClusterMetadata()
    metadata.update_metadata(response)
    leader = metadata.leader_for_partition(TopicPartition(topic, partition))
    return leader if isinstance(leader, int) and leader >= 0 else None


async def wait_new_leader(
    cluster: KafkaCluster, topic: str, partition: int, old: int, *, timeout_s: float
) -> int | None:
    """Wait until a node other than `old` says another node leads `partition` (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for node in cluster.node_ids:
            if node != old and cluster.is_running(node):
                leader = await leader_seen_by(cluster, node, topic, partition)
                if leader is not None and leader != old:
                    return leader
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.25)


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
