"""Every request accounted for: 2,000 requests through a leader's SIGKILL and its return.

The accounting (what each count means) is `chaos.accounting`'s; `make chaos` runs the same
accounting with more requests and more kinds of fault.

The deadline is 2 s, shorter than the stall a SIGKILL causes (the dead broker is fenced
after `broker.session.timeout.ms`, 3 s here, and until then acks=all writes wait for it):
the requests in flight at the kill are certainly refused and recorded, so the replay path,
and the duplicates it may cause, are exercised on every run.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from chaos.accounting import Load, account, drain_topic, stored_messages, wait_store_drained
from devtools.kafka import KafkaCluster
from tests.helpers.cluster import partition_layout, restore, survivors, wait_isr
from tests.helpers.kafka import create_topic
from tests.helpers.service import make_settings, running_app

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]

REQUESTS = 2000
CONCURRENCY = 20
FAST_RELAY = {"interval_ms": 200, "backoff_max_ms": 1000}
DEADLINE_MS = 2000


@pytest.mark.timeout(110)
async def test_2000_requests_through_a_leader_sigkill_are_all_accounted_for(
    kafka_cluster: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = await create_topic(bootstrap, topic_name, partitions=3, replication_factor=3)
    await wait_isr(kafka_cluster, topic, 3)
    victim = (await partition_layout(bootstrap, topic))[0]["leader"]
    settings = make_settings(bootstrap, topic, delivery_timeout_ms=DEADLINE_MS, replay=FAST_RELAY)
    killed_after = -1
    new_leader = -1
    try:
        async with running_app(settings) as running:
            load = Load(
                running.client,
                requests=REQUESTS,
                concurrency=CONCURRENCY,
                run_id=uuid.uuid4().hex[:8],
                deadline_s=75,
                request_timeout_s=30,
            )

            async def leader_sigkill() -> None:
                nonlocal killed_after, new_leader
                await load.wait_answered(REQUESTS // 2, timeout_s=60)
                killed_after = load.sent
                await asyncio.to_thread(kafka_cluster.kill_node, victim)
                await load.wait_answered(REQUESTS, timeout_s=75)
                layout = await partition_layout(survivors(kafka_cluster, victim), topic)
                new_leader = layout[0]["leader"]
                await asyncio.to_thread(kafka_cluster.start_node, victim)

            started = time.monotonic()
            answers, _ = await asyncio.gather(load.run(), leader_sigkill())
            load_s = time.monotonic() - started
            pending = await wait_store_drained(running.state.store, timeout_s=45)
            stored = await stored_messages(running.state.store)
        await wait_isr(kafka_cluster, topic, 3)
        on_topic = await drain_topic(bootstrap, topic, timeout_s=30)
    finally:
        await restore(kafka_cluster)

    result = account(answers, on_topic, stored)
    report = (
        f"leader {victim} of partition 0 SIGKILLed after {killed_after} answers "
        f"(new leader {new_leader}); load {load_s:.1f}s; {result.summary()}"
    )
    print(report)  # shown with -s / -rP: the counts of this run
    assert result.sent == REQUESTS, report
    assert REQUESTS // 2 <= killed_after < REQUESTS, report
    assert new_leader not in (victim, -1), report
    assert pending == 0, report
    # every answer is a receipt or a recorded refusal: no 500, no 4xx, no hang
    assert result.no_answer == 0, report
    assert set(result.by_status) <= {202, 503}, report
    assert result.ok + result.recorded == REQUESTS, report
    assert result.failed > 0, report  # the stall outlasted the deadline
    assert result.max_elapsed_s < DEADLINE_MS / 1000 + 5, report  # + recording, bounded
    # nothing acknowledged is lost
    assert result.acknowledged_missing == [], report
    # every 503 is in the store, and replayed onto the topic where the store says
    assert result.unrecorded == [], report
    assert result.replayed == result.recorded, report
    assert result.replay_mismatches == [], report
    # duplicates: only events the store recorded (a 503 whose write landed late, replayed too)
    assert result.unexplained_duplicates == [], report
    # a 503 saying `not_sent` never reached a broker; one saying `unknown` may have been
    # written late, then replayed too; so may a record whose replay timed out, then was retried
    maybe_twice = {
        a.event_id for a in answers if a.status == 503 and a.body["delivery"] == "unknown"
    }
    maybe_twice |= {s.event_id for s in stored if s.replays > 0}
    assert set(result.duplicated_events) <= maybe_twice, report
    assert result.reordered == 0, report
