"""The fault scenarios of `python -m chaos`, and one run of a scenario under load.

Each scenario runs against its own topic (3 partitions, replicated on the 3 nodes) and its
own service process and store, while `Plan.requests` requests flow from `Plan.concurrency`
clients. Every connection to a node goes through the fault proxy
(`KafkaCluster(proxied=True)`): the network faults are in `chaos.network`, the paused
processes in `chaos.pauses`, the store that cannot be written in `chaos.store_lock`. Faults
start when a share of the requests has been answered, so they land mid-stream whatever the
machine's speed. When the load is over every node is brought back and every route healed,
the relay is given time to drain the store, the topic is read back from the beginning, and
`chaos.accounting.account` gives the row of the table.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chaos.accounting import (
    Accounting,
    Answer,
    Load,
    account,
    drain_topic,
    stored_messages,
    wait_store_drained,
)
from chaos.cluster import (
    ISR_TIMEOUT_S,
    create_topic,
    leader_of,
    restore,
    resume_nodes,
    running_brokers,
    wait_isr,
)
from chaos.duplicates import CAUSE_REPUBLISHED
from chaos.network import lossy_link, partition_app_brokers, partition_leader_isolated, slow_link
from chaos.pauses import app_pause, broker_pause
from chaos.plan import Context, Fault, Plan
from chaos.service import Service
from chaos.store_lock import store_locked_kafka_down
from devtools.faultproxy import FaultProxy
from devtools.kafka import KafkaCluster
from kafka_events.store import SqlStore

RELAY_DRAIN_TIMEOUT_S = 180.0
TOPIC_DRAIN_TIMEOUT_S = 180.0
# The load's clients drop an idle connection well before the service does (its keep-alive
# timeout, 5 s): with both at 5 s, a request sent as the server closes its end gets no answer,
# though the server never read it. Proxies in front of the service follow the same rule.
CLIENT_IDLE_S = 2.0

__all__ = ["FAULTS", "Fault", "Outcome", "Plan", "run_fault"]


async def _leader_down(ctx: Context, *, kill: bool, down_s: float, partition: int) -> None:
    leader = await leader_of(ctx.cluster, ctx.topic, partition)
    how = "SIGKILL" if kill else "SIGTERM"
    ctx.note(f"{how} node {leader} (leader of partition {partition}) after {ctx.load.sent} sent")
    if kill:
        await asyncio.to_thread(ctx.cluster.kill_node, leader)
    else:
        await asyncio.to_thread(ctx.cluster.stop_node, leader)
    ctx.note(f"node {leader} stopped")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(ctx.cluster.start_node, leader)
    ctx.note(f"node {leader} back (registered)")


async def leader_sigterm(ctx: Context) -> None:
    if await ctx.wait_share(0.3):
        await _leader_down(ctx, kill=False, down_s=10, partition=0)


async def leader_sigkill(ctx: Context) -> None:
    if await ctx.wait_share(0.3):
        await _leader_down(ctx, kill=True, down_s=10, partition=0)


async def leader_bounces(ctx: Context) -> None:
    """SIGKILL the leader of partition i % 3, restart it, wait for a full ISR; repeat."""
    bounces = ctx.plan.bounces
    for i in range(bounces):
        if not await ctx.wait_share(0.1 + 0.7 * i / max(1, bounces)):
            ctx.note(f"load over after {i} bounces")
            return
        await _leader_down(ctx, kill=True, down_s=2, partition=i % 3)
        if not await wait_isr(ctx.cluster, ctx.topic, 3, timeout_s=ISR_TIMEOUT_S):
            ctx.note("ISR not full again in time")


async def broker_down(ctx: Context) -> None:
    if await ctx.wait_share(0.2):
        await _leader_down(ctx, kill=True, down_s=ctx.plan.down_s, partition=1)


async def app_sigkill(ctx: Context) -> None:
    if await ctx.wait_share(0.5):
        ctx.note(f"SIGKILL the service after {ctx.load.sent} sent")
        await ctx.service.kill()
        await ctx.service.start()
        ctx.note("service restarted (same store)")


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "leader-sigterm",
            "SIGTERM the leader of partition 0 at 30% of the requests; back after 10 s",
            leader_sigterm,
        ),
        Fault(
            "leader-sigkill",
            "SIGKILL the leader of partition 0 at 30% of the requests; back after 10 s",
            leader_sigkill,
        ),
        Fault(
            "leader-bounces",
            "SIGKILL the leader of partition i % 3, back after 2 s, ISR full again; "
            "repeated from 10% to 80% of the requests",
            leader_bounces,
        ),
        Fault(
            "broker-down",
            "SIGKILL the leader of partition 1 at 20% of the requests; down for --down-s",
            broker_down,
        ),
        Fault(
            "app-sigkill-outbox",
            "outbox policy: SIGKILL the service at 50% of the requests, restart it at once",
            app_sigkill,
            outbox=True,
            crash=True,
        ),
        Fault(
            "partition-app-brokers",
            "the app cut from every broker for --fault-s: blackholed (connections open, "
            "nothing passes) at 20% of the requests, refused at 60%",
            partition_app_brokers,
        ),
        Fault(
            "partition-leader-isolated",
            "the leader of partition 0 blackholed from both other nodes (inter-broker and "
            "KRaft routes, both ways) at 20% of the requests for --fault-s, and until the "
            "others elected a new leader; the app reaches every node",
            partition_leader_isolated,
        ),
        Fault(
            "broker-pause",
            "SIGSTOP the leader of partition 0 at 20% of the requests, SIGCONT after --fault-s "
            "once the others elected a new leader",
            broker_pause,
        ),
        Fault(
            "app-pause",
            "SIGSTOP the service at 30% of the requests, SIGCONT after --fault-s "
            "(at most half a client's timeout)",
            app_pause,
        ),
        Fault(
            "slow-link",
            "at 20% of the requests, for --fault-s: 150±50 ms each way on every route and "
            "256 KB/s per connection and direction on the app's",
            slow_link,
        ),
        Fault(
            "lossy-link",
            "at 20% of the requests, for --fault-s: every 1.5 s, 30% of the connections on "
            "every route reset (RST) when they next carry data",
            lossy_link,
        ),
        Fault(
            "store-locked-kafka-down",
            "at 20% of the requests: the app's links to the brokers refused; --fault-s later "
            "the store locked by another writer too; --fault-s later Kafka back, the store "
            "still locked; --fault-s (at least 12 s) later the store unlocked",
            store_locked_kafka_down,
        ),
    )
}


@dataclass(slots=True)
class Outcome:
    fault: Fault
    accounting: Accounting
    duration_s: float
    load_s: float
    notes: list[str]
    service_starts: int
    facts: dict[str, Any]
    answers: list[Answer]  # in the order they came

    @property
    def problems(self) -> list[str]:
        """What must never happen, whatever the fault."""
        result = self.accounting
        found = []
        if result.acknowledged_missing:
            found.append(f"{len(result.acknowledged_missing)} acknowledged but missing")
        # a 5xx with record_id null said so: nothing kept, retry; any other unrecorded one lies
        if len(result.unrecorded) > len(result.not_kept):
            found.append(f"{len(result.unrecorded) - len(result.not_kept)} refusals not recorded")
        if result.recorded != result.replayed:
            found.append(f"{result.recorded - result.replayed} recorded but not replayed")
        if result.unexplained_duplicates:
            found.append(f"{len(result.unexplained_duplicates)} unexplained duplicates")
        republished = result.duplicate_causes.get(CAUSE_REPUBLISHED, 0)
        if republished and not self.fault.crash:
            found.append(
                f"{republished} copies published again with no failure recorded and no crash "
                "(Kafka acknowledged, the store was not updated)"
            )
        if result.reordered:
            found.append(f"{result.reordered} reordered")
        if result.replay_mismatches:
            found.append(f"{len(result.replay_mismatches)} stored receipts not matching the topic")
        if result.other_statuses:
            found.append(f"unexpected statuses {result.other_statuses}")
        if result.store_pending:
            found.append(f"{result.store_pending} records still pending")
        return found


async def run_fault(
    fault: Fault, cluster: KafkaCluster, proxy: FaultProxy, plan: Plan, scratch: Path
) -> Outcome:
    """One scenario from a fresh topic and service to its accounting; every node back after.

    `cluster` is proxied, its routes served by `proxy` (`chaos.cluster.serve_links`).
    """
    run_id = uuid.uuid4().hex[:8]
    topic = f"chaos.{fault.name}.{run_id}"
    workdir = scratch / f"{fault.name}-{run_id}"
    workdir.mkdir(parents=True)
    store_path = workdir / "messages.db"
    store_url = f"sqlite+aiosqlite:///{store_path}"
    started = time.monotonic()
    await create_topic(cluster, topic)
    if not await wait_isr(cluster, topic, 3, timeout_s=ISR_TIMEOUT_S):
        raise RuntimeError(f"topic {topic}: ISR not full within {ISR_TIMEOUT_S:.0f}s")
    env = {
        "KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "VERIFICATION__TOPIC": topic,
        "STORE__URL": store_url,
        "REPLAY__INTERVAL_MS": "200",
        "REPLAY__BACKOFF_MAX_MS": "1000",
        "KAFKA__PRODUCER__RECONNECT_BACKOFF_MAX_MS": "1000",
        # each client sends 1,000 requests for its one address: far over the per-address limit
        "RATE_LIMIT__ENABLED": "false",
    }
    if fault.outbox:
        env["KAFKA__POLICIES__REPLICATED__OUTBOX"] = "true"
    service = Service(workdir, env)
    await service.start()
    try:
        limits = httpx.Limits(
            max_connections=plan.concurrency,
            max_keepalive_connections=plan.concurrency,
            keepalive_expiry=CLIENT_IDLE_S,
        )
        # Load bounds each request by plan.request_timeout_s; httpx's own timeouts come after it
        timeout = httpx.Timeout(plan.request_timeout_s + 5)
        async with httpx.AsyncClient(
            base_url=service.url, limits=limits, timeout=timeout
        ) as client:
            load = Load(
                client,
                requests=plan.requests,
                concurrency=plan.concurrency,
                run_id=run_id,
                deadline_s=plan.load_deadline_s,
                request_timeout_s=plan.request_timeout_s,
                pause_s=plan.pause_s,
            )
            ctx = Context(
                cluster=cluster,
                proxy=proxy,
                topic=topic,
                load=load,
                service=service,
                plan=plan,
                store_path=store_path,
            )
            try:
                answers, _ = await asyncio.gather(load.run(), fault.script(ctx))
            finally:
                load.stop()
                service.resume()
                resume_nodes(cluster)
                await asyncio.to_thread(proxy.heal)
                await restore(cluster)
        load_s = load.duration_s
        if not await wait_isr(cluster, topic, 3, timeout_s=ISR_TIMEOUT_S):
            ctx.notes.append("ISR not full again before the accounting")
        store = SqlStore(store_url)
        await store.open()
        try:
            pending = await wait_store_drained(store, timeout_s=RELAY_DRAIN_TIMEOUT_S)
            if pending:
                ctx.notes.append(f"{pending} records still pending after the relay's drain time")
            stored = await stored_messages(store)
        finally:
            await store.close()
        on_topic = await drain_topic(
            running_brokers(cluster), topic, timeout_s=TOPIC_DRAIN_TIMEOUT_S
        )
    finally:
        await service.stop()
    return Outcome(
        fault=fault,
        accounting=account(answers, on_topic, stored),
        duration_s=time.monotonic() - started,
        load_s=load_s,
        notes=ctx.notes,
        service_starts=service.starts,
        facts=ctx.facts,
        answers=answers,
    )
