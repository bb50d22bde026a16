"""Any record a producer can write to the worker's topic, against the worker, a real broker and
a real SMTP server (aiosmtpd): none stops email delivery. Each hostile record is committed past
with a dead letter, and the valid event after them is emailed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic, read_all, send_raw_header_key
from tests.helpers.smtp import Inbox, smtp_server
from tests.helpers.waiting import eventually
from tests.helpers.worker import (
    Topics,
    as_record,
    event,
    publish,
    running_worker,
    wait_committed,
    worker_settings,
)

pytestmark = pytest.mark.kafka

# the topic takes it, but its dead letter (with dlq_* headers) is over the 1 MiB request limit
HUGE = 1_048_400


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def smtp_port(inbox: Inbox) -> Iterator[int]:
    with smtp_server(inbox) as port:
        yield port


async def test_no_record_a_producer_can_write_stops_email_delivery(
    kafka_broker: KafkaCluster, topic_name: str, inbox: Inbox, smtp_port: int
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    large = {"max.message.bytes": "1500000"}
    await create_topic(bootstrap, topic_name, partitions=1, config=large)
    await create_topic(bootstrap, f"{topic_name}.dlq", partitions=1, config=large)
    topics = Topics(topic_name, f"{topic_name}.dlq", f"g-{topic_name}")
    first, last = event("first@example.com"), event("last@example.com")
    await publish(bootstrap, topics.source, as_record(first, topics.source))
    await send_raw_header_key(bootstrap, topics.source, b"\xff\xfe")  # undecodable
    hostile: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (b"k", b"[]", []),  # JSON, but not an object
        (b"k", b"", []),  # empty
        (b"k", None, []),  # a tombstone
        (b"\xff\xfe", b"\xff\xfe", [("event_id", b"\xff")]),  # nothing is UTF-8
        (b"k", b"x" * HUGE, []),  # too large to dead-letter as it is
        (None, b'{"email": 5}', [("kafka_replyTopic", b"\xff")]),  # wrong types, bad reply
    ]
    await publish(bootstrap, topics.source, *hostile)
    await publish(bootstrap, topics.source, as_record(last, topics.source))
    total = 1 + 1 + len(hostile) + 1

    async with running_worker(worker_settings(bootstrap, topics, smtp_port)):

        async def both_sent() -> bool:
            return len(inbox.messages) >= 2

        await eventually(both_sent, timeout_s=60)
        await wait_committed(bootstrap, topics.group, topics.source, total)
        letters = await read_all(bootstrap, topics.dead_letters, expected=1 + len(hostile))

    assert [m["To"] for m in inbox.messages] == ["first@example.com", "last@example.com"]
    offsets = sorted(int(dict(r.headers)["dlq_source_offset"]) for r in letters)
    assert offsets == list(range(1, 1 + 1 + len(hostile)))  # one dead letter for each
    kinds = {dict(r.headers)["dlq_error_type"] for r in letters}
    assert b"UnreadableRecord" in kinds
    huge = [r for r in letters if dict(r.headers).get("dlq_truncated") == b"true"]
    assert len(huge) == 1
