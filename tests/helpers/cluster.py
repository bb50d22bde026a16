"""Helpers for tests on the three-broker cluster, and on the proxied one (`ProxiedCluster`),
which runs `make chaos`'s faults in short (`run_short`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from chaos.faults import FAULTS, Outcome, Plan, run_fault
from devtools.faultproxy import FaultProxy
from devtools.kafka import KafkaCluster
from tests.helpers.waiting import eventually


async def partition_layout(bootstrap: str, topic: str) -> dict[int, dict[str, Any]]:
    """Leader, replicas and ISR of each partition of `topic`.

    Retried (bounded) while the admin client picks a broker that was just killed and is not
    yet fenced out of the metadata, or one that does not know a topic just created.
    """
    for attempt in range(20):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            (description,) = await admin.describe_topics([topic])
            if description["partitions"]:  # a broker may not know a topic just created yet
                return {p["partition"]: p for p in description["partitions"]}
            if attempt == 19:
                raise AssertionError(f"topic {topic} has no partitions in the metadata")
        except (KafkaError, OSError):
            if attempt == 19:
                raise
        finally:
            # close() is a no-op when start() failed half-way; the client may hold sockets
            await admin._client.close()
        await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def wait_isr(cluster: KafkaCluster, topic: str, size: int, timeout_s: float = 60) -> None:
    """Wait until every partition of `topic` has an ISR of `size`."""
    servers = ",".join(cluster.broker_address(n) for n in cluster.node_ids if cluster.is_running(n))

    async def isr_is_full() -> bool:
        layout = await partition_layout(servers, topic)
        return all(len(p["isr"]) == size for p in layout.values())

    await eventually(isr_is_full, timeout_s=timeout_s, interval_s=0.2)


async def restore(cluster: KafkaCluster) -> None:
    """Bring every stopped node back (the cluster is shared by the session)."""
    for node in cluster.node_ids:
        if not cluster.is_running(node):
            await asyncio.to_thread(cluster.start_node, node)


def survivors(cluster: KafkaCluster, *down: int) -> str:
    return ",".join(cluster.broker_address(n) for n in cluster.node_ids if n not in down)


@dataclass(frozen=True)
class ProxiedCluster:
    """Three nodes whose every route (client, inter-broker, KRaft) goes through `proxy`."""

    cluster: KafkaCluster
    proxy: FaultProxy


# The short version of a `make chaos` fault: the same script and accounting, less load.
# Faults last longer than the service's 5 s deadline, so requests are refused within them.
# Each client pauses between requests, so that the load (at least 15 requests x 0.6 s per
# client) outlasts the fault however fast the machine is.
SHORT_PLAN = Plan(requests=300, concurrency=20, down_s=10, bounces=1, fault_s=6, pause_s=0.6)


async def run_short(name: str, proxied: ProxiedCluster, scratch: Path) -> tuple[Outcome, str]:
    """`make chaos`'s fault `name` with `SHORT_PLAN`; its outcome and a report to print."""
    outcome = await run_fault(FAULTS[name], proxied.cluster, proxied.proxy, SHORT_PLAN, scratch)
    report = (
        f"{name}: {'; '.join(outcome.notes)}\n{outcome.accounting.summary()}\n"
        f"facts: {outcome.facts}; problems: {outcome.problems}; "
        f"{outcome.duration_s:.0f}s in all, load {outcome.load_s:.0f}s"
    )
    print(report)  # shown with -s / -rP: the counts of this run
    return outcome, report
