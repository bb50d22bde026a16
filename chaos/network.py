"""Network faults through the fault proxy of a proxied cluster: partitions (the app from the
brokers, one broker from the others), a slow link and a lossy one.

Each script cuts or degrades routes for `Plan.fault_s` seconds and heals them (also when it is
cancelled); `run_fault` heals every route again before the accounting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from chaos.cluster import (
    FAILOVER_TIMEOUT_S,
    ISR_TIMEOUT_S,
    client_links,
    isolation_links,
    leader_of,
    peer_links,
    wait_isr,
    wait_new_leader,
)
from chaos.plan import Context
from devtools.faultproxy import BLACKHOLE, REFUSE, CutMode

SLOW_LATENCY_MS = 150
SLOW_JITTER_MS = 50
SLOW_RATE_KB_S = 256
LOSSY_TOXICITY = 0.3
LOSSY_ON_S = 0.5
LOSSY_OFF_S = 1.0


async def cut_for(
    ctx: Context, links: Sequence[str], mode: CutMode, what: str, seconds: float
) -> tuple[int, int]:
    """Cut `links` for `seconds`, then heal; the answers that came meanwhile (from, to)."""
    first = ctx.load.sent
    ctx.note(f"partition ({mode}) {what} after {first} sent")
    await asyncio.to_thread(ctx.proxy.cut, links, mode)
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(ctx.proxy.heal, links)
    ctx.note(f"healed; {ctx.load.sent - first} answered meanwhile")
    return first, ctx.load.sent


async def note_leader_after(ctx: Context, partition: int) -> None:
    """Once the ISR is full again, note (and keep as a fact) who leads `partition`."""
    if not await wait_isr(ctx.cluster, ctx.topic, 3, timeout_s=ISR_TIMEOUT_S):
        ctx.note("ISR not full again in time")
        return
    leader = await leader_of(ctx.cluster, ctx.topic, partition)
    ctx.facts["leader_after"] = leader
    ctx.note(f"ISR full again; partition {partition} led by node {leader}")


async def note_new_leader(ctx: Context, old: int, partition: int) -> None:
    """Wait (bounded) until the other nodes have a leader for `partition` other than `old`."""
    leader = await wait_new_leader(
        ctx.cluster, ctx.topic, partition, old, timeout_s=FAILOVER_TIMEOUT_S
    )
    ctx.facts["leader_during"] = leader
    ctx.note(
        f"the other nodes elected node {leader} for partition {partition}"
        if leader is not None
        else f"no new leader for partition {partition} within {FAILOVER_TIMEOUT_S:.0f}s"
    )


async def partition_app_brokers(ctx: Context) -> None:
    """The app cut from every broker: blackholed at 20% of the requests, refused at 60%."""
    links = client_links(ctx.cluster)
    for share, mode in ((0.2, BLACKHOLE), (0.6, REFUSE)):
        if not await ctx.wait_share(share):
            ctx.note(f"load over before the {mode} partition")
            return
        ctx.facts[mode] = await cut_for(
            ctx, links, mode, "of the app from every broker", ctx.plan.fault_s
        )


async def partition_leader_isolated(ctx: Context) -> None:
    """The leader of partition 0 cut from both other nodes (clients still reach every node)."""
    if not await ctx.wait_share(0.2):
        return
    victim = await leader_of(ctx.cluster, ctx.topic, 0)
    ctx.facts["victim"] = victim
    links = isolation_links(ctx.cluster, victim)
    first = ctx.load.sent
    ctx.note(
        f"partition ({BLACKHOLE}) of node {victim} (leader of partition 0) from the other "
        f"nodes after {first} sent"
    )
    await asyncio.to_thread(ctx.proxy.cut, links, BLACKHOLE)
    try:
        await asyncio.sleep(ctx.plan.fault_s)
        # healed only once the majority has a new leader: the old one is then a zombie
        await note_new_leader(ctx, victim, 0)
    finally:
        await asyncio.to_thread(ctx.proxy.heal, links)
    ctx.facts[BLACKHOLE] = (first, ctx.load.sent)
    ctx.note(f"healed; {ctx.load.sent - first} answered meanwhile")
    await note_leader_after(ctx, 0)


async def slow_link(ctx: Context) -> None:
    """Latency on every route (each direction), and a bandwidth cap on the app's."""
    if not await ctx.wait_share(0.2):
        return
    clients = client_links(ctx.cluster)
    links = [*clients, *peer_links(ctx.cluster)]
    first = ctx.load.sent
    ctx.note(
        f"{SLOW_LATENCY_MS}±{SLOW_JITTER_MS} ms each way on every route, "
        f"{SLOW_RATE_KB_S} KB/s on the app's, after {first} sent"
    )
    try:
        await asyncio.to_thread(
            ctx.proxy.slow, links, latency_ms=SLOW_LATENCY_MS, jitter_ms=SLOW_JITTER_MS
        )
        await asyncio.to_thread(ctx.proxy.slow, clients, rate_kb_s=SLOW_RATE_KB_S)
        ctx.facts["faults"] = await asyncio.to_thread(ctx.proxy.faults)
        await asyncio.sleep(ctx.plan.fault_s)
    finally:
        await asyncio.to_thread(ctx.proxy.heal, links)
    ctx.facts["slow"] = (first, ctx.load.sent)
    ctx.note(f"healed; {ctx.load.sent - first} answered meanwhile")


async def lossy_link(ctx: Context) -> None:
    """Connections reset at random on every route: each round, a share of them is reset."""
    if not await ctx.wait_share(0.2):
        return
    links = [*client_links(ctx.cluster), *peer_links(ctx.cluster)]
    first = ctx.load.sent
    ctx.note(
        f"every {LOSSY_ON_S + LOSSY_OFF_S:.1f} s, reset {LOSSY_TOXICITY:.0%} of the connections "
        f"on every route, after {first} sent"
    )
    rounds = 0
    end = time.monotonic() + ctx.plan.fault_s
    try:
        while time.monotonic() < end:
            await asyncio.to_thread(ctx.proxy.reset, links, toxicity=LOSSY_TOXICITY)
            await asyncio.sleep(LOSSY_ON_S)
            await asyncio.to_thread(ctx.proxy.heal, links)
            rounds += 1
            await asyncio.sleep(LOSSY_OFF_S)
    finally:
        await asyncio.to_thread(ctx.proxy.heal, links)
    ctx.facts["rounds"] = rounds
    ctx.facts["lossy"] = (first, ctx.load.sent)
    ctx.note(f"healed after {rounds} rounds; {ctx.load.sent - first} answered meanwhile")
