"""Atomic multi-message publishing with a transactional producer (real broker).

One sign-up publishes `user.registered` and `send.verification.email` in one transaction: a
`read_committed` consumer sees both or neither.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.config import PolicyName
from devtools.kafka import KafkaCluster
from kafka_events import errors
from kafka_events.messages import OutgoingMessage
from kafka_events.producer import KafkaPublisher
from kafka_events.producer import ProducerState as PublisherState
from tests.helpers.kafka import create_topic, read_all
from tests.helpers.service import make_settings

pytestmark = pytest.mark.kafka


def sign_up(
    users: str, emails: str, n: int, *, email_value: bytes | None = None
) -> list[OutgoingMessage]:
    key = f"user{n}@example.com".encode()
    return [
        OutgoingMessage(
            topic=users, value=json.dumps({"user": n}).encode(), key=key, event_id=f"u-{n}"
        ),
        OutgoingMessage(
            topic=emails,
            value=email_value or json.dumps({"email": n}).encode(),
            key=key,
            event_id=f"e-{n}",
        ),
    ]


def transactional(
    bootstrap: str, topic: str, transactional_id: str, **overrides: Any
) -> KafkaPublisher:
    settings = make_settings(bootstrap, topic, transactional_id=transactional_id, **overrides)
    policy = settings.kafka.policies.get(PolicyName.REPLICATED)
    return KafkaPublisher(settings.kafka, policy, name=PolicyName.REPLICATED.value)


async def test_a_committed_transaction_is_seen_whole_and_an_aborted_one_not_at_all(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    users = await create_topic(bootstrap, f"{topic_name}-users", partitions=1)
    emails = await create_topic(
        bootstrap, f"{topic_name}-emails", partitions=1, config={"max.message.bytes": "2048"}
    )
    publisher = transactional(bootstrap, emails, f"tx-{topic_name}")
    await publisher.start()
    try:
        committed = await publisher.publish_atomically(sign_up(users, emails, 1))
        # the second message is over the topic's limit: the broker refuses it after the first
        # was written, and the transaction is aborted
        with pytest.raises(errors.RecordTooLarge):
            await publisher.publish_atomically(sign_up(users, emails, 2, email_value=b"x" * 4000))
        after_abort = await publisher.publish_atomically(sign_up(users, emails, 3))
    finally:
        await publisher.stop()

    assert [r.topic for r in committed] == [users, emails]
    assert all(r.offset is not None for r in committed + after_abort)
    committed_users = await read_all(bootstrap, users, expected=2, isolation_level="read_committed")
    assert [json.loads(r.value)["user"] for r in committed_users] == [1, 3]  # not 2
    # the aborted transaction's first message was written, and is hidden from read_committed
    everything = await read_all(bootstrap, users, expected=3, isolation_level="read_uncommitted")
    assert [json.loads(r.value)["user"] for r in everything] == [1, 2, 3]
    committed_emails = await read_all(
        bootstrap, emails, expected=2, isolation_level="read_committed"
    )
    assert [json.loads(r.value)["email"] for r in committed_emails] == [1, 3]


async def test_two_processes_sharing_a_transactional_id_fence_each_other(
    kafka_broker: KafkaCluster, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    users = await create_topic(bootstrap, f"{topic_name}-users", partitions=1)
    emails = await create_topic(bootstrap, f"{topic_name}-emails", partitions=1)
    old = transactional(bootstrap, emails, f"tx-{topic_name}", delivery_timeout_ms=3000)
    new = transactional(bootstrap, emails, f"tx-{topic_name}", delivery_timeout_ms=3000)
    await old.start()
    try:
        await old.publish_atomically(sign_up(users, emails, 1))
        await new.start()  # same id: the broker bumps the epoch, the old producer is a zombie
        try:
            with pytest.raises(errors.PublishError) as fenced:
                await old.publish_atomically(sign_up(users, emails, 2))
            survivor = await new.publish_atomically(sign_up(users, emails, 3))
            with pytest.raises(errors.PublishRejected):  # refused at once from now on
                await old.publish_atomically(sign_up(users, emails, 4))
            old_state = old.state
        finally:
            await new.stop()
    finally:
        await old.stop()

    assert fenced.value.cause == "ProducerFenced"
    assert not fenced.value.retriable
    assert old_state is PublisherState.FENCED  # it does not reconnect and fence the new one
    assert survivor[0].offset is not None
    committed = await read_all(bootstrap, users, expected=2, isolation_level="read_committed")
    assert [json.loads(r.value)["user"] for r in committed] == [1, 3]
