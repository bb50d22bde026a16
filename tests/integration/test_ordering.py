"""Per-key order holds across the producer's retries (real broker).

aiokafka sends at most one batch per partition at a time and retries a failed batch before
the next one of that partition goes out; when it gives a batch up (a request timeout) and we
retry its messages, `ordered_per_key` (one publish per key at a time) keeps later messages of
the key from overtaking them. So one key's messages are written in the order their publishes
were called. Not covered: a message that finally fails is recorded and replayed later, after
messages published behind it (see the README's ordering section).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from app.config import PolicyName
from devtools.kafka import KafkaCluster
from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt
from tests.helpers.kafka import create_topic, read_all
from tests.helpers.service import make_settings, running_app

pytestmark = pytest.mark.kafka

COUNT = 300


@pytest.mark.parametrize("policy", [PolicyName.REPLICATED, PolicyName.LEADER])
async def test_one_keys_order_survives_retries_while_the_broker_is_frozen(
    kafka_broker: KafkaCluster, topic_name: str, policy: PolicyName
) -> None:
    topic = await create_topic(kafka_broker.bootstrap_servers, topic_name, partitions=1)
    settings = make_settings(
        kafka_broker.bootstrap_servers,
        topic,
        policy=policy,
        request_timeout_ms=300,  # the frozen broker makes requests time out: retries
        linger_ms=2,  # several batches, so some wait behind a retried one
        delivery_timeout_ms=20000,
        retry={"retries": 20, "initial_retry_time_ms": 100, "max_retry_time_ms": 500},
        replay={"enabled": False},
    )
    pid = kafka_broker.pid(1)
    assert pid is not None
    async with running_app(settings) as running:
        publisher = running.state.publishers[policy]

        async def publish(seq: int) -> DeliveryReceipt:
            value = json.dumps({"seq": seq}).encode()
            message = OutgoingMessage(topic=topic, value=value, key=b"k", event_id=f"e-{seq}")
            return await publisher.publish(message)

        tasks = []
        for seq in range(COUNT):
            tasks.append(asyncio.create_task(publish(seq)))
            await asyncio.sleep(0)  # let it hand its message over, in this order
            if seq == COUNT // 3:
                os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(1.2)
        os.kill(pid, signal.SIGCONT)
        receipts = await asyncio.gather(*tasks)

    records = await read_all(kafka_broker.bootstrap_servers, topic, expected=COUNT)
    sequence = [json.loads(r.value)["seq"] for r in records]
    assert max(r.elapsed_ms for r in receipts) > 1000  # some waited out the freeze
    assert all(r.offset is not None for r in receipts)
    if policy is PolicyName.REPLICATED:
        # the idempotent producer retries by itself; duplicates are discarded by the broker
        assert sequence == list(range(COUNT))
    else:
        # without idempotence a timed-out batch may have been written before it was resent:
        # duplicates are possible, but the first copy of each message is in order
        first_seen = list(dict.fromkeys(sequence))
        assert first_seen == list(range(COUNT))
    # receipts agree with the log: offsets increase with the sequence
    offsets = [r.offset or 0 for r in receipts]
    assert offsets == sorted(offsets)
