"""Brokers fail while requests flow: a leader's SIGKILL, a broker down for 30 s, the whole
cluster down when the service starts. Every answer is a receipt (202) or a recorded refusal
(503), and what was accepted ends up on the topic exactly as accepted.

Three brokers (replication factor 3, min.insync.replicas=2, a dead broker fenced after 3 s),
shared by the session: every test brings every node back before it ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from chaos.accounting import Answer, Load, account, drain_topic, stored_messages
from devtools.kafka import KafkaCluster
from tests.helpers.cluster import partition_layout, restore, survivors, wait_isr
from tests.helpers.kafka import create_topic
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]

FAST_RELAY = {"interval_ms": 200, "backoff_max_ms": 1000}
# An answer may take its deadline plus the time to record the message (SQLite, fsync) on a
# loaded 2-core machine.
RECORD_SLACK_S = 5.0


async def _topic(cluster: KafkaCluster, name: str) -> str:
    await create_topic(cluster.bootstrap_servers, name, partitions=3, replication_factor=3)
    await wait_isr(cluster, name, 3)
    return name


async def _event_status(
    client: httpx.AsyncClient, event_id: str, *, timeout_s: float
) -> dict[str, Any]:
    """`GET /events/{event_id}` once it says delivered (TimeoutError otherwise)."""
    status: dict[str, Any] = {}

    async def delivered() -> bool:
        nonlocal status
        status = (await client.get(f"/events/{event_id}")).json()
        return status.get("status") == "delivered"

    await eventually(delivered, timeout_s=timeout_s, interval_s=0.2)
    return status


async def _ready(client: httpx.AsyncClient) -> int:
    return (await client.get("/health/ready")).status_code


def _counts(answers: list[Answer]) -> dict[int | None, int]:
    counts: dict[int | None, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return counts


@pytest.mark.timeout(110)
async def test_a_leader_sigkill_mid_stream_answers_202_or_503_and_loses_nothing(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = await _topic(kafka_cluster, topic_name)
    victim = (await partition_layout(bootstrap, topic))[0]["leader"]
    settings = make_settings(bootstrap, topic, replay=FAST_RELAY)  # the default 5 s deadline
    deadline_s = settings.kafka.policies.replicated.delivery_timeout_ms / 1000
    killed_after = -1
    leader_while_down = -1
    delivered: dict[str, dict[str, Any]] = {}
    try:
        async with running_app(settings) as running:
            # 20 clients, each sending its next request as soon as the previous one is answered
            load = Load(
                running.client,
                requests=1000,
                concurrency=20,
                run_id=uuid.uuid4().hex[:8],
                deadline_s=80,
                request_timeout_s=30,
            )

            async def leader_sigkill() -> None:
                nonlocal killed_after, leader_while_down
                await load.wait_answered(250, timeout_s=60)
                killed_after = load.sent
                await asyncio.to_thread(kafka_cluster.kill_node, victim)
                await load.wait_answered(load.requests, timeout_s=80)
                layout = await partition_layout(survivors(kafka_cluster, victim), topic)
                leader_while_down = layout[0]["leader"]
                await asyncio.to_thread(kafka_cluster.start_node, victim)

            answers, _ = await asyncio.gather(load.run(), leader_sigkill())
            # every refused request was recorded; the relay delivers it (the node is back)
            for answer in answers:
                if answer.status == 503 and answer.event_id is not None:
                    delivered[answer.event_id] = await _event_status(
                        running.client, answer.event_id, timeout_s=45
                    )
            stored = await stored_messages(running.state.store)
        await wait_isr(kafka_cluster, topic, 3)
        on_topic = await drain_topic(bootstrap, topic, timeout_s=30)
    finally:
        await restore(kafka_cluster)

    result = account(answers, on_topic, stored)
    after_kill = answers[killed_after:]
    report = (
        f"leader {victim} of partition 0 SIGKILLed after {killed_after} answers, then "
        f"{_counts(after_kill)}; {result.summary()}"
    )
    print(report)
    assert leader_while_down not in (victim, -1), report
    # every request got 202 or 503, within its deadline (plus recording)
    assert result.sent == load.requests, report
    assert result.no_answer == 0, report
    assert set(result.by_status) <= {202, 503}, report
    assert result.max_elapsed_s < deadline_s + RECORD_SLACK_S, report
    # writes went on after the fail-over
    assert sum(1 for a in after_kill if a.status == 202) > 0, report
    # every 202 is at its receipt's partition/offset with its payload
    assert result.acknowledged_missing == [], report
    # every 503 was recorded and is now delivered, where its status says, with its payload
    refused = [a for a in answers if a.status == 503]
    assert all(a.record_id is not None for a in refused), report
    assert result.unrecorded == [], report
    assert result.recorded == result.replayed == len(refused) == len(delivered), report
    assert result.replay_mismatches == [], report
    assert all(s["record_id"] for s in delivered.values()), report
    assert result.unexplained_duplicates == [], report
    assert result.reordered == 0, report


@pytest.mark.timeout(115)
async def test_with_one_broker_down_for_30_s_a_trickle_of_acks_all_requests_all_succeed(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = await _topic(kafka_cluster, topic_name)
    victim = (await partition_layout(bootstrap, topic))[0]["leader"]
    # acks=all waits for the whole ISR until the dead broker is fenced and dropped from it
    # (3 s here) and for a new leader: a deadline that outlasts that, as the README advises.
    settings = make_settings(bootstrap, topic, delivery_timeout_ms=15000, replay=FAST_RELAY)
    down_s = 30.0
    isr_while_down: dict[int, list[int]] = {}
    answered_before = answered_while_down = -1
    try:
        async with running_app(settings) as running:
            load = Load(
                running.client,
                requests=100_000,  # bounded by stop() and the deadline, not by the count
                concurrency=2,
                run_id=uuid.uuid4().hex[:8],
                deadline_s=95,
                request_timeout_s=30,
                pause_s=0.2,
            )

            async def broker_down() -> None:
                nonlocal answered_before, answered_while_down
                try:
                    await load.wait_answered(10, timeout_s=30)
                    answered_before = load.sent
                    down_at = time.monotonic()
                    await asyncio.to_thread(kafka_cluster.kill_node, victim)
                    await asyncio.sleep(down_s - 5)
                    layout = await partition_layout(survivors(kafka_cluster, victim), topic)
                    isr_while_down.update({p: sorted(d["isr"]) for p, d in layout.items()})
                    await asyncio.sleep(max(0.0, down_at + down_s - time.monotonic()))
                    answered_while_down = load.sent - answered_before
                    await asyncio.to_thread(kafka_cluster.start_node, victim)
                    await load.wait_answered(load.sent + 10, timeout_s=30)
                finally:
                    load.stop()

            answers, _ = await asyncio.gather(load.run(), broker_down())
        await wait_isr(kafka_cluster, topic, 3, timeout_s=60)
        layout_after = await partition_layout(bootstrap, topic)
        on_topic = await drain_topic(bootstrap, topic, timeout_s=30)
    finally:
        await restore(kafka_cluster)

    result = account(answers, on_topic, [])
    report = (
        f"node {victim} down {down_s:.0f}s after {answered_before} answers; "
        f"{answered_while_down} answered while down; ISR while down {isr_while_down}; "
        f"{result.summary()}"
    )
    print(report)
    # the broker really was out: every partition went on with the two others in its ISR
    assert len(isr_while_down) == 3, report
    assert all(len(isr) == 2 and victim not in isr for isr in isr_while_down.values()), report
    assert answered_while_down >= 50, report
    # all succeeded, while it was down too, and every one is where its receipt says
    assert result.by_status == {202: result.sent}, report
    assert result.no_answer == 0, report
    assert result.acknowledged_missing == [], report
    assert result.duplicates == 0, report
    assert result.reordered == 0, report
    # after the restart the ISR is full again
    assert all(sorted(p["isr"]) == sorted(kafka_cluster.node_ids) for p in layout_after.values())


async def _restart_cluster(cluster: KafkaCluster) -> None:
    """Start a fully stopped cluster (its nodes need each other's votes to start), or restore."""
    if not any(cluster.is_running(n) for n in cluster.node_ids):
        await asyncio.to_thread(cluster.start)
    await restore(cluster)


@pytest.mark.timeout(110)
async def test_with_the_whole_cluster_down_at_start_up_requests_are_kept_then_delivered(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = await _topic(kafka_cluster, topic_name)
    # Connection attempts are retried at least every 0.5 s. Each stays bounded by the default
    # 5 s: refused at once while the nodes are down, it must not be cut short while they start
    # (aiokafka leaves the connection of a cancelled bootstrap open).
    quick: dict[str, Any] = {"reconnect_backoff_max_ms": 500}
    direct = make_settings(bootstrap, topic, delivery_timeout_ms=1500, replay=FAST_RELAY, **quick)
    outbox = make_settings(bootstrap, topic, outbox=True, replay=FAST_RELAY, **quick)
    requests = 10
    started = time.monotonic()
    try:
        await asyncio.to_thread(kafka_cluster.stop)
        async with running_app(direct) as first, running_app(outbox) as second:
            ready_before = (await _ready(first.client), await _ready(second.client))
            refused, queued = await asyncio.gather(
                *(
                    Load(
                        app.client,
                        requests=requests,
                        concurrency=requests,
                        run_id=uuid.uuid4().hex[:8],
                        deadline_s=20,
                        request_timeout_s=15,
                    ).run()
                    for app in (first, second)
                )
            )
            pending = [
                (await app.client.get(f"/events/{a.event_id}")).json()["status"]
                for app, answers in ((first, refused), (second, queued))
                for a in answers
            ]
            await asyncio.to_thread(kafka_cluster.start)

            async def both_ready() -> bool:
                return (await _ready(first.client), await _ready(second.client)) == (200, 200)

            await eventually(both_ready, timeout_s=45, interval_s=0.2)
            for app, answers in ((first, refused), (second, queued)):
                for answer in answers:
                    assert answer.event_id is not None
                    await _event_status(app.client, answer.event_id, timeout_s=45)
            stored_first = await stored_messages(first.state.store)
            stored_second = await stored_messages(second.state.store)
        on_topic = await drain_topic(bootstrap, topic, timeout_s=30)
    finally:
        await _restart_cluster(kafka_cluster)
    elapsed_s = time.monotonic() - started

    stored = [*stored_first, *stored_second]
    direct_result = account(refused, on_topic, stored)
    outbox_result = account(queued, on_topic, stored)
    # A replay that timed out waiting for its acknowledgement may still be written by the
    # producer, and the next replay writes it again: the only duplicates allowed here.
    retried = {s.event_id for s in stored if s.replays > 0}
    report = (
        f"ready before {ready_before}; {elapsed_s:.1f}s from the stop to all delivered; "
        f"{len(retried)} records needed more than one replay\n"
        f"default policy: {direct_result.summary()}\noutbox: {outbox_result.summary()}"
    )
    print(report)
    assert ready_before == (503, 503), report
    assert pending == ["pending"] * (2 * requests), report
    # the default policy: refused, recorded, then replayed exactly as accepted
    assert direct_result.by_status == {503: requests}, report
    assert all(a.body["delivery"] == "not_sent" and a.record_id for a in refused), report
    assert direct_result.recorded == direct_result.replayed == requests, report
    # the outbox: accepted at once, then relayed exactly as accepted
    assert outbox_result.by_status == {202: requests}, report
    assert all(a.body["status"] == "queued" for a in queued), report
    assert outbox_result.acknowledged_missing == [], report
    assert outbox_result.queued == requests, report
    # the store says where each one is; nothing else is on the topic
    assert direct_result.replay_mismatches == outbox_result.replay_mismatches == [], report
    assert set(direct_result.duplicated_events) <= retried, report
    assert len(on_topic) == 2 * requests + direct_result.duplicates, report
