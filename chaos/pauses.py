"""Processes that stop without dying: a paused broker and a paused app (SIGSTOP, SIGCONT).

A paused process keeps its sockets open: its peers' connections neither fail nor answer, as
with a long GC pause, a frozen VM or a stuck disk.
"""

from __future__ import annotations

import asyncio

from chaos.cluster import leader_of, pause_node, resume_nodes
from chaos.network import note_leader_after, note_new_leader
from chaos.plan import Context


async def broker_pause(ctx: Context) -> None:
    """SIGSTOP the leader of partition 0 for `fault_s`, then SIGCONT."""
    if not await ctx.wait_share(0.2):
        return
    victim = await leader_of(ctx.cluster, ctx.topic, 0)
    ctx.facts["victim"] = victim
    first = ctx.load.sent
    pause_node(ctx.cluster, victim)
    ctx.note(f"SIGSTOP node {victim} (leader of partition 0) after {first} sent")
    try:
        await asyncio.sleep(ctx.plan.fault_s)
        await note_new_leader(ctx, victim, 0)  # resumed only once it was replaced
    finally:
        resume_nodes(ctx.cluster)
    ctx.facts["paused"] = (first, ctx.load.sent)
    ctx.note(f"SIGCONT node {victim}; {ctx.load.sent - first} answered meanwhile")
    await note_leader_after(ctx, 0)


async def app_pause(ctx: Context) -> None:
    """SIGSTOP the service (shorter than a client's timeout), then SIGCONT."""
    if not await ctx.wait_share(0.3):
        return
    seconds = min(ctx.plan.fault_s, ctx.plan.request_timeout_s / 2)
    ctx.service.pause()
    ctx.note(f"SIGSTOP the service for {seconds:.0f} s after {ctx.load.sent} sent")
    try:
        await asyncio.sleep(1.0)  # answers already on their way may still arrive
        settled = ctx.load.sent
        await asyncio.sleep(max(0.0, seconds - 1.0))
        ctx.facts["answered_while_paused"] = ctx.load.sent - settled
    finally:
        ctx.service.resume()
    ctx.note("SIGCONT the service")
