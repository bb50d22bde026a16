"""At most one email per event when the SMTP outcome is unknown: a real broker, a real SMTP
server (aiosmtpd) whose final reply a test delays or drops, and the worker in-process.

Once the server has the whole message (`Inbox.messages`), the worker never sends it again:
it waits for the final reply up to `SMTP__FINAL_REPLY_TIMEOUT_MS`, and without one records the
event as `unknown` and dead-letters it as `smtp_outcome_unknown`. Failures before the final
dot, and 4xx answers to it, are still retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.config import SmtpBackend, SmtpSettings
from app.worker.consumer import VerificationEmailWorker
from app.worker.mailer import Progress, SmtpMailer
from devtools.kafka import KafkaCluster
from kafka_events.consumer import HandledEvents
from tests.helpers.kafka import create_topic, read_all
from tests.helpers.smtp import Inbox, smtp_server
from tests.helpers.waiting import eventually, repo_root
from tests.helpers.worker import (
    Topics,
    as_record,
    create_topics,
    event,
    headers_of,
    publish,
    record_count,
    reply_headers,
    running_worker,
    wait_committed,
    worker_settings,
)

pytestmark = pytest.mark.kafka

# Short deadlines: each command 1 s, the final reply 2 s (tests only; the defaults are 10 s
# and 120 s). Three attempts, so a resend would show as up to three emails.
FAST = {"timeout_ms": 1000, "final_reply_timeout_ms": 2000}


@pytest.fixture
async def topics(kafka_broker: KafkaCluster, topic_name: str) -> Topics:
    return await create_topics(kafka_broker.bootstrap_servers, topic_name)


@pytest.fixture
async def replies(kafka_broker: KafkaCluster, topic_name: str) -> str:
    return await create_topic(kafka_broker.bootstrap_servers, f"{topic_name}.replies", partitions=1)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
def caplog_worker(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="app.worker"):
        yield caplog


async def handled_status(store_url: str, event_id: str) -> str | None:
    handled = HandledEvents(store_url)
    await handled.open()
    try:
        found = await handled.get(event_id)
    finally:
        await handled.close()
    return None if found is None else found.status


def unknown_records(topic: str) -> float:
    labels = {"topic": topic, "outcome": "unknown"}
    return REGISTRY.get_sample_value("kafka_events_worker_records_total", labels) or 0.0


async def _one_request(bootstrap: str, topics: Topics, replies: str) -> str:
    requested = event("ada@example.com")
    record = as_record(requested, topics.source, reply_headers(replies, b"c-1"))
    await publish(bootstrap, topics.source, record)
    return requested.event_id


@pytest.mark.parametrize(
    "fault",
    [{"reply_delay_s": 5.0}, {"drop_after_data": True}],
    ids=["final-reply-too-late", "connection-dropped-after-the-dot"],
)
async def test_no_final_reply_gives_one_email_recorded_unknown_and_dead_lettered(
    kafka_broker: KafkaCluster,
    topics: Topics,
    replies: str,
    store_url: str,
    caplog_worker: pytest.LogCaptureFixture,
    fault: dict[str, Any],
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    event_id = await _one_request(bootstrap, topics, replies)
    inbox = Inbox(**fault)
    unknown_before = unknown_records(topics.source)

    with smtp_server(inbox) as port:
        settings = worker_settings(bootstrap, topics, port, store_url=store_url, smtp=FAST)
        async with running_worker(settings):
            [dead] = await read_all(bootstrap, topics.dead_letters, expected=1, timeout_s=30)
            [reply] = await read_all(bootstrap, replies, expected=1, timeout_s=30)
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert len(inbox.messages) == 1  # the server got it once, and was not sent it again
    assert inbox.data_seen == 1
    dlq = headers_of(dead)
    assert dlq["dlq_error_type"] == b"smtp_outcome_unknown"
    assert b"after the final dot" in dlq["dlq_error"]
    assert dlq["dlq_attempts"] == b"1"
    assert dlq["event_id"] == event_id.encode()
    body = json.loads(reply.value)
    assert (body["event_id"], body["status"], body["detail"]) == (
        event_id,
        "unknown",
        "smtp_outcome_unknown",
    )
    assert await handled_status(store_url, event_id) == "unknown"
    assert unknown_records(topics.source) == unknown_before + 1
    [logged] = [r for r in caplog_worker.records if "outcome unknown" in r.getMessage()]
    assert logged.levelno == logging.ERROR
    assert event_id in logged.getMessage()


async def test_a_final_reply_slower_than_the_command_timeout_is_waited_for(
    kafka_broker: KafkaCluster, topics: Topics, replies: str, store_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    event_id = await _one_request(bootstrap, topics, replies)
    # the 250 comes 2 s after the final dot: past SMTP__TIMEOUT_MS, within the final timeout
    inbox = Inbox(reply_delay_s=2.0)
    smtp = {"timeout_ms": 1000, "final_reply_timeout_ms": 10000}

    with smtp_server(inbox) as port:
        settings = worker_settings(bootstrap, topics, port, store_url=store_url, smtp=smtp)
        async with running_worker(settings):
            [reply] = await read_all(bootstrap, replies, expected=1, timeout_s=30)
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert len(inbox.messages) == 1
    assert json.loads(reply.value)["status"] == "sent"
    assert await handled_status(store_url, event_id) == "sent"
    assert await record_count(bootstrap, topics.dead_letters) == 0


async def test_an_unknown_event_is_not_sent_again_by_a_restart_or_a_redelivery(
    kafka_broker: KafkaCluster, topics: Topics, replies: str, store_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    event_id = await _one_request(bootstrap, topics, replies)
    dropping, healthy = Inbox(drop_after_data=True), Inbox()

    with smtp_server(dropping) as port:
        settings = worker_settings(bootstrap, topics, port, store_url=store_url, smtp=FAST)
        async with running_worker(settings):
            await wait_committed(bootstrap, topics.group, topics.source, 1)
    # A new group reads the topic from the start again, as after lost offsets, against a
    # server that would now accept it: only the record of the unknown outcome stops a resend.
    again = f"{topics.group}-again"
    with smtp_server(healthy) as port:
        settings = worker_settings(
            bootstrap, topics, port, store_url=store_url, group=again, smtp=FAST
        )
        async with running_worker(settings):
            await wait_committed(bootstrap, again, topics.source, 1)
            dead = await read_all(bootstrap, topics.dead_letters, expected=2, timeout_s=30)
            answers = await read_all(bootstrap, replies, expected=2, timeout_s=30)

    assert (len(dropping.messages), healthy.recipients_seen) == (1, [])
    # dead-lettered again, so the operator's trace exists even if the first one was lost
    assert [headers_of(d)["dlq_error_type"] for d in dead] == [b"smtp_outcome_unknown"] * 2
    assert [json.loads(a.value)["status"] for a in answers] == ["unknown", "unknown"]
    assert await handled_status(store_url, event_id) == "unknown"


async def test_a_stop_while_waiting_for_the_final_reply_records_it_and_nothing_is_resent(
    kafka_broker: KafkaCluster, topics: Topics, replies: str, store_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    event_id = await _one_request(bootstrap, topics, replies)
    slow, healthy = Inbox(reply_delay_s=8.0), Inbox()
    # stop() gives the record in hand 0.5 s, then cancels it mid-wait for the final reply
    smtp = {"timeout_ms": 1000, "final_reply_timeout_ms": 20000}

    with smtp_server(slow) as port:
        settings = worker_settings(
            bootstrap, topics, port, store_url=store_url, smtp=smtp, shutdown_timeout_ms=500
        )
        worker = VerificationEmailWorker(settings)
        await worker.start()
        try:

            async def queued() -> bool:
                return len(slow.messages) == 1

            await eventually(queued, timeout_s=30)
        finally:
            await worker.stop()
        # the next owner of the partition, with a server that would accept it at once
        with smtp_server(healthy) as healthy_port:
            settings = worker_settings(
                bootstrap, topics, healthy_port, store_url=store_url, smtp=smtp
            )
            async with running_worker(settings):
                await wait_committed(bootstrap, topics.group, topics.source, 1)
                [dead] = await read_all(bootstrap, topics.dead_letters, expected=1, timeout_s=30)

    assert (len(slow.messages), healthy.recipients_seen) == (1, [])
    assert headers_of(dead)["dlq_error_type"] == b"smtp_outcome_unknown"
    assert await handled_status(store_url, event_id) == "unknown"


@pytest.mark.parametrize(
    ("fault", "attempts"),
    [
        ({"drop_at_rcpt": 1}, 2),  # the connection lost before DATA: nothing was delivered
        ({"final_answers": ["451 4.3.0 Try again later"] * 2}, 3),  # a 4xx to the final dot
    ],
    ids=["dropped-before-data", "4xx-to-the-final-dot"],
)
async def test_a_failure_the_server_did_not_keep_is_retried_into_one_email(
    kafka_broker: KafkaCluster,
    topics: Topics,
    replies: str,
    store_url: str,
    fault: dict[str, Any],
    attempts: int,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    event_id = await _one_request(bootstrap, topics, replies)
    inbox = Inbox(**fault)

    with smtp_server(inbox) as port:
        settings = worker_settings(bootstrap, topics, port, store_url=store_url, smtp=FAST)
        async with running_worker(settings):
            [reply] = await read_all(bootstrap, replies, expected=1, timeout_s=30)
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert len(inbox.messages) == 1
    assert len(inbox.recipients_seen) == attempts
    assert json.loads(reply.value)["status"] == "sent"
    assert await handled_status(store_url, event_id) == "sent"
    assert await record_count(bootstrap, topics.dead_letters) == 0


async def test_a_5xx_to_the_final_dot_is_dead_lettered_as_failed_not_retried(
    kafka_broker: KafkaCluster, topics: Topics, replies: str, store_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    event_id = await _one_request(bootstrap, topics, replies)
    inbox = Inbox(final_answers=["554 5.6.0 Message refused"])

    with smtp_server(inbox) as port:
        settings = worker_settings(bootstrap, topics, port, store_url=store_url, smtp=FAST)
        async with running_worker(settings):
            [dead] = await read_all(bootstrap, topics.dead_letters, expected=1, timeout_s=30)
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert (inbox.data_seen, inbox.messages) == (1, [])
    dlq = headers_of(dead)
    assert (dlq["dlq_error_type"], dlq["dlq_attempts"]) == (b"SMTPDataError", b"1")
    assert await handled_status(store_url, event_id) is None  # failed: not recorded as handled


async def test_a_sent_email_the_database_cannot_record_is_recorded_later_not_resent(
    kafka_broker: KafkaCluster,
    topics: Topics,
    replies: str,
    tmp_path: Path,
    caplog_worker: pytest.LogCaptureFixture,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    path = tmp_path / "store.db"
    inbox = Inbox()

    with smtp_server(inbox) as port:
        settings = worker_settings(bootstrap, topics, port, store_url=f"sqlite+aiosqlite:///{path}")
        async with running_worker(settings):
            # Another connection holds SQLite's write lock: the worker can read handled_events
            # (WAL) but its record of the sent email fails after the busy timeout (5 s).
            lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
                event_id = await _one_request(bootstrap, topics, replies)

                async def handled_again() -> bool:
                    return "handled again after a pause" in caplog_worker.text

                await eventually(handled_again, timeout_s=30)
                await asyncio.to_thread(lock.execute, "ROLLBACK")
            finally:
                await asyncio.to_thread(lock.close)
            [reply] = await read_all(bootstrap, replies, expected=1, timeout_s=30)
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    assert len(inbox.messages) == 1
    assert json.loads(reply.value)["status"] == "sent"
    assert await handled_status(f"sqlite+aiosqlite:///{path}", event_id) == "sent"


async def test_the_two_step_data_dot_stuffs_lines_and_the_message_arrives_intact() -> None:
    inbox = Inbox()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    text = "first\n.a line that starts with a dot\n.\nlast\n"  # "." alone ends DATA
    message.set_content(text)

    with smtp_server(inbox) as port:
        settings = SmtpSettings(backend=SmtpBackend.SMTP, host="127.0.0.1", port=port)
        await SmtpMailer(settings).send(message, progress := Progress())

    [received] = inbox.messages
    body = received.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == text
    assert progress.data_sent


# --- what remains: a crash between the server's 250 and the worker's record -------------------


async def test_a_crash_after_the_server_queued_the_email_sends_it_again_with_its_message_id(
    kafka_broker: KafkaCluster, topics: Topics, replies: str, tmp_path: Path
) -> None:
    """The one duplicate the worker cannot prevent (docs: the duplicate table). The worker's
    record of the sent email is held up (another connection has SQLite's write lock), and the
    worker is SIGKILLed meanwhile: its successor sends the email again, with the same
    Message-ID, which the receiving side can use to drop the copy."""
    bootstrap = kafka_broker.bootstrap_servers
    path = tmp_path / "store.db"
    inbox = Inbox()
    env = {
        "PYTHONPATH": str(repo_root()),
        "KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "VERIFICATION__TOPIC": topics.source,
        "STORE__URL": f"sqlite+aiosqlite:///{path}",
        "SMTP__BACKEND": "smtp",
        "SMTP__HOST": "127.0.0.1",
        "WORKER__GROUP_ID": topics.group,
        "WORKER__DEAD_LETTER_TOPIC": topics.dead_letters,
        "METRICS__WORKER_PORT": "0",
    }
    with smtp_server(inbox) as port, (tmp_path / "worker.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.worker",
            cwd=tmp_path,
            env={**os.environ, **env, "SMTP__PORT": str(port)},
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
        lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:

            async def started() -> bool:
                return "worker started" in (tmp_path / "worker.log").read_text()

            await eventually(started, timeout_s=60, interval_s=0.1)
            await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
            event_id = await _one_request(bootstrap, topics, replies)
            await eventually(lambda: _queued(inbox, 1), timeout_s=30, interval_s=0.05)
            process.kill()  # the record of the sent email waits on the lock
            await process.wait()
            await asyncio.to_thread(lock.execute, "ROLLBACK")
        finally:
            await asyncio.to_thread(lock.close)
            if process.returncode is None:
                process.kill()
                await process.wait()

        settings = worker_settings(bootstrap, topics, port, store_url=f"sqlite+aiosqlite:///{path}")
        async with running_worker(settings):
            await wait_committed(bootstrap, topics.group, topics.source, 1)

    first, second = inbox.messages
    assert first["Message-ID"] == second["Message-ID"] == f"<{event_id}@example.com>"
    assert await handled_status(f"sqlite+aiosqlite:///{path}", event_id) == "sent"


async def _queued(inbox: Inbox, count: int) -> bool:
    return len(inbox.messages) >= count
