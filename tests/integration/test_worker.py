"""The verification-email worker against a real broker and a real SMTP server (aiosmtpd).

Most tests run the worker in-process (`VerificationEmailWorker.start()`/`stop()`); one runs
`python -m app.worker` as a process and stops it with SIGTERM. Each test has its own topics,
consumer group and database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import REGISTRY

from app.config import SmtpBackend, SmtpSettings
from app.worker.consumer import VerificationEmailWorker, WorkerState
from app.worker.mailer import SUBJECT, Progress, SendError, SmtpMailer
from devtools.kafka import KafkaCluster
from kafka_events.consumer import HandledEvents
from tests.helpers.kafka import create_topic, read_all, read_at
from tests.helpers.processes import worker_process
from tests.helpers.service import running_app as running_api
from tests.helpers.smtp import Inbox, smtp_server
from tests.helpers.waiting import closed_port, eventually, repo_root
from tests.helpers.worker import (
    LINK,
    Topics,
    as_record,
    committed,
    create_topics,
    event,
    headers_of,
    publish,
    reply_headers,
    running_worker,
    wait_committed,
    worker_settings,
)

pytestmark = pytest.mark.kafka


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def smtp_port(inbox: Inbox) -> Iterator[int]:
    with smtp_server(inbox) as port:
        yield port


@pytest.fixture
async def topics(kafka_broker: KafkaCluster, topic_name: str) -> Topics:
    return await create_topics(kafka_broker.bootstrap_servers, topic_name)


# --- the tests --------------------------------------------------------------------------------


async def test_a_request_to_the_api_becomes_one_email_with_the_link(
    kafka_broker: KafkaCluster, topics: Topics, inbox: Inbox, smtp_port: int, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    store_url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    settings = worker_settings(bootstrap, topics, smtp_port, store_url=store_url)

    async with running_worker(settings), running_api(settings) as api:
        response = await api.client.post(
            "/verification-emails", json={"email": "ada@example.com", "redirect_url": LINK}
        )
        assert response.status_code == 202, response.text
        await eventually(lambda: _has(inbox, 1), timeout_s=30)
        await wait_committed(bootstrap, topics.group, topics.source, 1)

    [sent] = inbox.messages
    assert sent["To"] == "ada@example.com"
    assert sent["Subject"] == SUBJECT
    assert sent["Message-ID"] == f"<{response.json()['event_id']}@example.com>"
    body = sent.get_body(("plain",))
    assert body is not None
    assert LINK in body.get_content()
    assert inbox.recipients_seen == ["ada@example.com"]


async def test_metrics_count_the_publish_and_the_worker_catches_up_to_zero_lag(
    kafka_broker: KafkaCluster, topics: Topics, inbox: Inbox, smtp_port: int, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = worker_settings(
        bootstrap, topics, smtp_port, store_url=f"sqlite+aiosqlite:///{tmp_path}/store.db"
    )
    policy = settings.verification.policy.value
    # two events written before the worker starts: it begins 2 behind
    for address in ("lag1@example.com", "lag2@example.com"):
        await publish(bootstrap, topics.source, as_record(event(address), topics.source))

    async with running_worker(settings), running_api(settings) as api:
        response = await api.client.post(
            "/verification-emails", json={"email": "ada@example.com", "redirect_url": LINK}
        )
        await eventually(lambda: _has(inbox, 3), timeout_s=30)
        await wait_committed(bootstrap, topics.group, topics.source, 3)

        async def caught_up() -> bool:
            return _sample("kafka_events_worker_lag", topic=topics.source, partition="0") == 0

        await eventually(caught_up, timeout_s=10)
        page = (await api.client.get("/metrics")).text

    assert response.status_code == 202
    delivered = (
        f'kafka_events_publish_total{{outcome="delivered",policy="{policy}",'
        f'topic="{topics.source}"}} 1.0'
    )
    assert delivered in page
    assert (
        f'kafka_events_publish_duration_seconds_count{{policy="{policy}",'
        f'topic="{topics.source}"}} 1.0'
    ) in page
    assert f'kafka_events_producer_ready{{policy="{policy}"}} 1.0' in page
    assert _sample("kafka_events_worker_records_total", topic=topics.source, outcome="sent") == 3
    assert _sample("kafka_events_worker_handle_duration_seconds_count", topic=topics.source) == 3


async def test_request_reply_through_the_api_and_the_worker_answers_once_the_email_is_sent(
    kafka_broker: KafkaCluster, topics: Topics, inbox: Inbox, smtp_port: int, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = worker_settings(
        bootstrap, topics, smtp_port, store_url=f"sqlite+aiosqlite:///{tmp_path}/store.db"
    )
    settings = settings.model_copy(
        update={"reply": settings.reply.model_copy(update={"topic": f"{topics.source}.reply"})}
    )

    async with running_worker(settings), running_api(settings) as api:

        async def replies_ready() -> bool:
            return bool(api.state.replies.ready)

        await eventually(replies_ready, timeout_s=30)
        response = await api.client.post(
            "/verification-emails",
            params={"wait_for": "delivery"},
            json={"email": "ada@example.com", "redirect_url": LINK},
        )
        emails_when_answered = len(inbox.messages)

    body = response.json()
    assert response.status_code == 200, body
    assert body["reply"]["status"] == "sent"
    assert body["reply"]["event_id"] == body["receipt"]["event_id"]
    assert emails_when_answered == 1  # the answer came after the email went out
    assert LINK in str(inbox.messages[0].get_body(("plain",)).get_content())  # type: ignore[union-attr]


async def test_the_same_event_twice_is_emailed_once_and_the_second_reply_says_duplicate(
    kafka_broker: KafkaCluster, topics: Topics, inbox: Inbox, smtp_port: int, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    replies = await create_topic(bootstrap, f"{topic_name}.replies", partitions=1)
    requested = event()
    await publish(
        bootstrap,
        topics.source,
        as_record(requested, topics.source, reply_headers(replies, b"first")),
        as_record(requested, topics.source, reply_headers(replies, b"second")),
    )

    async with running_worker(worker_settings(bootstrap, topics, smtp_port)):
        records = await read_all(bootstrap, replies, expected=2, timeout_s=30)
        await wait_committed(bootstrap, topics.group, topics.source, 2)

    assert len(inbox.to("ada@example.com")) == 1
    answers = {r.key: json.loads(r.value) for r in records}
    assert answers[b"first"]["status"] == "sent"
    assert answers[b"second"]["status"] == "duplicate"
    assert {a["event_id"] for a in answers.values()} == {requested.event_id}
    assert all(a["detail"] is None for a in answers.values())


async def test_a_restarted_worker_does_not_send_a_handled_event_again(
    kafka_broker: KafkaCluster, topics: Topics, inbox: Inbox, smtp_port: int, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    store_url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    await publish(bootstrap, topics.source, as_record(event(), topics.source))

    async with running_worker(worker_settings(bootstrap, topics, smtp_port, store_url=store_url)):
        await eventually(lambda: _has(inbox, 1), timeout_s=30)
    # A new group reads the topic from the start again, as after lost offsets: only the
    # durable record of handled events stands between the record and a second email.
    again = f"{topics.group}-again"
    settings = worker_settings(bootstrap, topics, smtp_port, store_url=store_url, group=again)
    async with running_worker(settings):
        await wait_committed(bootstrap, again, topics.source, 1)

    assert len(inbox.messages) == 1


@pytest.mark.parametrize(
    ("answer", "attempts"),
    [("451 4.3.0 Try again later", 3), ("550 5.1.1 No such user", 1)],
    ids=["4xx-retried", "5xx-not-retried"],
)
async def test_a_refused_email_is_retried_then_dead_lettered_and_committed(
    kafka_broker: KafkaCluster, topics: Topics, topic_name: str, answer: str, attempts: int
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    replies = await create_topic(bootstrap, f"{topic_name}.replies", partitions=1)
    requested = event("bob@example.com")
    key, value, headers = as_record(
        requested, topics.source, reply_headers(replies, b"c-1"), correlation_id="req-bob-1"
    )
    await publish(bootstrap, topics.source, (key, value, headers))
    inbox = Inbox(refuse=answer)

    with smtp_server(inbox) as port:
        async with running_worker(worker_settings(bootstrap, topics, port, max_attempts=3)):
            [dead] = await read_all(bootstrap, topics.dead_letters, expected=1, timeout_s=30)
            [reply] = await read_all(bootstrap, replies, expected=1, timeout_s=30)
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert inbox.messages == []
    assert inbox.recipients_seen == ["bob@example.com"] * attempts
    assert (dead.key, dead.value) == (key, value)
    dlq = headers_of(dead)
    for name, original in headers:
        assert dlq[name] == original
    assert dlq["dlq_error_type"] == b"SMTPRecipientsRefused"
    assert answer[:3].encode() in dlq["dlq_error"]
    assert dlq["dlq_attempts"] == str(attempts).encode()
    assert dlq["dlq_source_topic"] == topics.source.encode()
    assert (dlq["dlq_source_partition"], dlq["dlq_source_offset"]) == (b"0", b"0")
    body = json.loads(reply.value)
    assert (body["status"], body["detail"]) == ("failed", "SMTPRecipientsRefused")
    assert body["event_id"] == requested.event_id
    assert headers_of(reply)["correlation_id"] == b"req-bob-1"  # the logs' id follows the reply


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (b"this is not JSON", b"InvalidJson"),
        (b'{"event_id": "e-1", "event_type": "verification_email.requested"}', b"InvalidEvent"),
        (None, b"EmptyValue"),
    ],
    ids=["not-json", "missing-fields", "no-value"],
)
async def test_a_poison_message_is_dead_lettered_at_once(
    kafka_broker: KafkaCluster,
    topics: Topics,
    inbox: Inbox,
    smtp_port: int,
    value: bytes | None,
    error_type: bytes,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    headers = [("event_id", b"e-1"), ("trace", b"t-7")]
    await publish(bootstrap, topics.source, (b"k", value, headers))

    async with running_worker(worker_settings(bootstrap, topics, smtp_port, max_attempts=5)):
        [dead] = await read_all(bootstrap, topics.dead_letters, expected=1, timeout_s=30)
        await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert (dead.key, dead.value) == (b"k", value)
    dlq = headers_of(dead)
    assert (dlq["event_id"], dlq["trace"]) == (b"e-1", b"t-7")
    assert dlq["dlq_error_type"] == error_type
    assert dlq["dlq_attempts"] == b"0"
    assert inbox.recipients_seen == []


async def test_a_dead_letter_kafka_refuses_leaves_the_record_uncommitted(
    kafka_broker: KafkaCluster,
    topic_name: str,
    inbox: Inbox,
    smtp_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source = await create_topic(bootstrap, topic_name, partitions=1)
    # every dead letter is larger than this topic accepts
    dead = await create_topic(
        bootstrap, f"{topic_name}.dlq", partitions=1, config={"max.message.bytes": "64"}
    )
    topics = Topics(source, dead, f"g-{topic_name}")
    await publish(bootstrap, source, (b"k", b"not JSON, and longer than sixty-four bytes....", []))

    async def retried_twice() -> bool:
        return caplog.text.count("handled again after a pause") >= 2

    with caplog.at_level(logging.WARNING, logger="app.worker.consumer"):
        async with running_worker(worker_settings(bootstrap, topics, smtp_port)):
            await eventually(retried_twice, timeout_s=30)
            assert await committed(bootstrap, topics.group, source) == 0

    assert await committed(bootstrap, topics.group, source) == 0


async def test_the_reply_goes_to_the_reply_topic_and_partition_with_the_correlation_id(
    kafka_broker: KafkaCluster, topics: Topics, inbox: Inbox, smtp_port: int, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    replies = await create_topic(bootstrap, f"{topic_name}.replies", partitions=3)
    correlation_id = uuid.uuid4().bytes  # opaque bytes, not text
    requested = event()
    await publish(
        bootstrap,
        topics.source,
        as_record(requested, topics.source, reply_headers(replies, correlation_id, partition=2)),
        # no reply headers: no reply
        as_record(event("eve@example.com"), topics.source),
    )

    async with running_worker(worker_settings(bootstrap, topics, smtp_port)):
        reply = await read_at(bootstrap, replies, 2, 0, timeout_s=30)
        await wait_committed(bootstrap, topics.group, topics.source, 2)

    assert reply.key == correlation_id
    assert headers_of(reply) == {
        "kafka_correlationId": correlation_id,
        "event_id": requested.event_id.encode(),
    }
    body = json.loads(reply.value)
    assert set(body) == {"event_id", "status", "detail", "handled_at"}
    assert (body["event_id"], body["status"], body["detail"]) == (requested.event_id, "sent", None)
    assert datetime.fromisoformat(body["handled_at"]).utcoffset() is not None
    all_replies = await read_all(bootstrap, replies, expected=1)
    assert len(all_replies) == 1
    assert len(inbox.messages) == 2


async def test_stop_finishes_the_email_in_hand_commits_and_leaves_the_group(
    kafka_broker: KafkaCluster, topics: Topics
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    inbox = Inbox(data_delay_s=1.0)  # the server is slow to accept: stop() comes mid-send
    await publish(bootstrap, topics.source, *(as_record(event(), topics.source) for _ in range(2)))

    with smtp_server(inbox) as port:
        worker = VerificationEmailWorker(worker_settings(bootstrap, topics, port))
        await worker.start()
        try:
            await eventually(lambda: _seen(inbox, 1), timeout_s=30)
        finally:
            await worker.stop()
    assert worker.state is WorkerState.STOPPED

    assert len(inbox.messages) == 1  # finished, not abandoned; the next one not started
    assert await committed(bootstrap, topics.group, topics.source) == 1
    # A new member of the group starts right after the last handled record.
    consumer = AIOKafkaConsumer(
        topics.source,
        bootstrap_servers=bootstrap,
        group_id=topics.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.offset == 1


async def test_the_worker_process_sends_then_stops_on_sigterm_with_status_0(
    kafka_broker: KafkaCluster, topics: Topics, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    password = f"pw-{uuid.uuid4().hex}"

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == password.encode()
        return AuthResult(success=ok)

    inbox = Inbox()
    requested = event("proc@example.com")
    await publish(bootstrap, topics.source, as_record(requested, topics.source))
    env = {
        "PYTHONPATH": str(repo_root()),
        "KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "VERIFICATION__TOPIC": topics.source,
        "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/store.db",
        "SMTP__BACKEND": "smtp",
        "SMTP__HOST": "127.0.0.1",
        "SMTP__USERNAME": "worker",
        "SMTP__PASSWORD": password,
        "WORKER__GROUP_ID": topics.group,
        "WORKER__DEAD_LETTER_TOPIC": topics.dead_letters,
        "WORKER__LOG_LEVEL": "debug",
        "METRICS__WORKER_PORT": str(metrics_port := closed_port()),
    }
    log = tmp_path / "worker.log"
    with smtp_server(inbox, authenticator=authenticate, auth_require_tls=False) as port:
        async with worker_process({**env, "SMTP__PORT": str(port)}, tmp_path, log) as process:
            await eventually(lambda: _has(inbox, 1), timeout_s=60, interval_s=0.1)
            await wait_committed(bootstrap, topics.group, topics.source, 1)
            async with httpx.AsyncClient(timeout=5) as client:
                scraped = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text

    text = log.read_text()
    assert process.returncode == 0, text  # stopped by SIGTERM, gracefully
    assert inbox.to("proc@example.com")
    assert f"event {requested.event_id}" in text
    assert "worker stopped" in text
    assert password not in text
    sent = f'kafka_events_worker_records_total{{outcome="sent",topic="{topics.source}"}} 1.0'
    assert sent in scraped
    assert 'kafka_events_worker_email_attempts_total{outcome="sent"} 1.0' in scraped


async def test_the_smtp_mailer_calls_an_unreachable_server_a_transient_failure() -> None:
    mailer = SmtpMailer(SmtpSettings(backend=SmtpBackend.SMTP, port=closed_port(), timeout_ms=2000))
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    message.set_content("x")

    with pytest.raises(SendError) as caught:
        await mailer.send(message, progress := Progress())

    assert not progress.data_sent
    assert caught.value.transient


async def test_handled_events_on_postgresql(postgres_url: str) -> None:
    store = HandledEvents(postgres_url)
    await store.open()
    try:
        offset = 2**40  # a 64-bit Kafka offset
        first = await store.record("e-1", status="sent", topic="t", partition=0, offset=offset)
        again = await store.record("e-1", status="sent", topic="t", partition=0, offset=offset)
        found = await store.get("e-1")
        missing = await store.get("e-2")
    finally:
        await store.close()

    assert (first, again, missing) == (True, False, None)
    assert found is not None
    assert found.offset == offset
    assert found.handled_at.utcoffset() is not None


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def _has(inbox: Inbox, count: int) -> bool:
    return len(inbox.messages) >= count


async def _seen(inbox: Inbox, count: int) -> bool:
    return len(inbox.recipients_seen) >= count
