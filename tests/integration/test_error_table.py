"""The README's error table, failure by failure, against a real broker.

This module runs its own one-node broker as production clusters are usually set up: topics
are not created on first use, and an authoriser checks every request (allowing what no ACL
denies). Each test shows whether the failure is retried, what the HTTP caller gets, and
whether the message is kept in the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.protocol.admin import CreateAclsRequest  # type: ignore[import-untyped]

from app.config import PolicyName
from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic, read_all, read_at
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}
FAST_RELAY = {"interval_ms": 100, "backoff_max_ms": 300}

# Kafka's ACL codes (org.apache.kafka.common.acl / resource)
_TOPIC, _LITERAL, _WRITE, _DENY = 2, 3, 4, 2


@pytest.fixture(scope="module")
def strict_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One node with auto-creation off and the standard authoriser on."""
    with KafkaCluster(
        tmp_path_factory.mktemp("kafka-strict"),
        nodes=1,
        extra_properties={
            "auto.create.topics.enable": "false",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "true",
        },
    ) as cluster:
        yield cluster


async def _deny_writes(bootstrap: str, topic: str) -> None:
    """An ACL that denies every client (all are anonymous here) writes to `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        request = CreateAclsRequest(_TOPIC, topic, _LITERAL, "User:ANONYMOUS", "*", _WRITE, _DENY)
        response = await admin._send_request(request)
    finally:
        await admin.close()
    assert [r[0] for r in response.creation_responses] == [0], response


async def _record(running: Any, record_id: str) -> Any:
    record = await running.state.store.get(record_id)
    assert record is not None
    return record


async def test_unknown_topic_with_auto_creation_off_is_recorded_and_replayed_once_created(
    strict_broker: KafkaCluster, topic_name: str
) -> None:
    # aiokafka waits for the topic's metadata; our attempt timeout ends each wait (retriable)
    settings = make_settings(
        strict_broker.bootstrap_servers,
        topic_name,
        attempt_timeout_ms=300,
        delivery_timeout_ms=1500,
        retry={"retries": 2, "initial_retry_time_ms": 50},
        replay=FAST_RELAY,
    )
    async with running_app(settings) as running:
        refused = await running.client.post("/verification-emails", json=BODY)
        body = refused.json()
        record = await _record(running, body["record_id"])
        await create_topic(strict_broker.bootstrap_servers, topic_name, partitions=1)
        status: dict[str, Any] = {}

        async def delivered() -> bool:
            nonlocal status
            status = (await running.client.get(f"/events/{body['event_id']}")).json()
            return bool(status["status"] == "delivered")

        await eventually(delivered, timeout_s=30, interval_s=0.1)

    assert refused.status_code == 503
    assert body["error"] == "broker_unavailable"
    assert record.error_type in {"AttemptTimeout", "KafkaTimeoutError"}
    assert record.attempts == 3  # retried: the topic may be about to exist
    message = await read_at(strict_broker.bootstrap_servers, topic_name, 0, status["offset"])
    assert json.loads(message.value)["event_id"] == body["event_id"]


async def test_a_record_over_the_topics_limit_is_refused_by_the_broker_with_413(
    strict_broker: KafkaCluster, topic_name: str
) -> None:
    # Within the producer's max_request_size (1 MiB), over the topic's max.message.bytes.
    await create_topic(
        strict_broker.bootstrap_servers,
        topic_name,
        partitions=1,
        config={"max.message.bytes": "1024"},
    )
    settings = make_settings(strict_broker.bootstrap_servers, topic_name, replay=FAST_RELAY)
    body = {"email": "ada@example.com", "redirect_url": "https://x.example/" + "a" * 1500}
    async with running_app(settings) as running:
        refused = await running.client.post("/verification-emails", json=body)
        accepted = await running.client.post("/verification-emails", json=BODY)
        kept = await running.state.store.count()

    assert refused.status_code == 413
    assert refused.json()["error"] == "record_too_large"
    assert refused.json()["record_id"] is None  # a replay could never fit either
    assert kept == 0
    assert accepted.status_code == 202  # the topic itself works
    on_topic = await read_all(strict_broker.bootstrap_servers, topic_name, expected=1)
    assert [json.loads(m.value)["event_id"] for m in on_topic] == [accepted.json()["event_id"]]


async def test_an_authorisation_failure_is_not_retried_and_is_recorded(
    strict_broker: KafkaCluster, topic_name: str
) -> None:
    await create_topic(strict_broker.bootstrap_servers, topic_name, partitions=1)
    await _deny_writes(strict_broker.bootstrap_servers, topic_name)
    settings = make_settings(
        strict_broker.bootstrap_servers,
        topic_name,
        policy=PolicyName.LEADER,
        retry={"retries": 3, "initial_retry_time_ms": 50},
        replay={"enabled": False},
    )
    async with running_app(settings) as running:
        refused = await running.client.post("/verification-emails", json=BODY)
        body = refused.json()
        record = await _record(running, body["record_id"])

    assert refused.status_code == 503
    assert body["error"] == "publish_rejected"
    assert "Retry-After" not in refused.headers  # waiting does not help; an operator must act
    assert record.error_type == "TopicAuthorizationFailedError"
    assert record.attempts == 1  # not retriable
    assert "127.0.0.1" not in refused.text


async def test_a_request_timeout_is_retried_and_succeeds_once_the_broker_answers(
    strict_broker: KafkaCluster, topic_name: str
) -> None:
    await create_topic(strict_broker.bootstrap_servers, topic_name, partitions=1)
    # Not idempotent, so aiokafka gives up on the batch after request_timeout_ms and the
    # timeout reaches our retry policy (an idempotent producer retries it by itself).
    settings = make_settings(
        strict_broker.bootstrap_servers,
        topic_name,
        policy=PolicyName.LEADER,
        request_timeout_ms=400,
        delivery_timeout_ms=15000,
        retry={"retries": 10, "initial_retry_time_ms": 200, "max_retry_time_ms": 1000},
        replay={"enabled": False},
    )
    pid = strict_broker.pid(1)
    assert pid is not None
    async with running_app(settings) as running:
        assert (await running.client.post("/verification-emails", json=BODY)).status_code == 202
        os.kill(pid, signal.SIGSTOP)  # the broker stops answering, connections stay open
        try:
            request = asyncio.create_task(running.client.post("/verification-emails", json=BODY))
            await asyncio.sleep(1.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        response = await request
        kept = await running.state.store.count()

    receipt = response.json()
    assert response.status_code == 202, receipt
    assert receipt["attempts"] > 1  # the first attempt timed out
    assert receipt["elapsed_ms"] >= 1000
    assert kept == 0
    message = await read_at(
        strict_broker.bootstrap_servers, topic_name, receipt["partition"], receipt["offset"]
    )
    assert json.loads(message.value)["event_id"] == receipt["event_id"]
