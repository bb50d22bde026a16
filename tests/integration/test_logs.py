"""The API and the worker as processes, logging JSON at DEBUG: ids on every line, no secret.

Both run against a real broker, a real PostgreSQL store whose role must give its password, and
a real SMTP server that wants a login, with an admin token set. Requests go through the happy
path and the error paths (a wrong admin token, an SMTP login refused, an invalid correlation
id); then each process is started again with a database password the server refuses, and with
invalid settings. No output of any of them may contain a secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from devtools.kafka import KafkaCluster
from devtools.postgres import PostgresServer
from tests.helpers.kafka import create_topic
from tests.helpers.processes import app_process, mailing_env, run_to_end, worker_process
from tests.helpers.smtp import Inbox, smtp_server
from tests.helpers.waiting import closed_port, eventually

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


class FirstSessionRefused:
    """An SMTP authenticator that refuses every login of the first session (an error path:
    the worker dead-letters that email), then accepts the right credentials."""

    def __init__(self, username: str, password: str) -> None:
        self.credentials = (username.encode(), password.encode())
        self.first: Session | None = None
        self.attempts = 0

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.attempts += 1
        self.first = self.first or session
        right = isinstance(data, LoginPassword) and (data.login, data.password) == self.credentials
        # handled=False: aiosmtpd then answers 535 itself (with True it answers nothing)
        return AuthResult(success=right and session is not self.first, handled=False)


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON (fails on a line that is not)."""
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON line: {line!r}")
    return records


async def _run_to_end(module: str, env: Mapping[str, str], cwd: Path, name: str) -> tuple[int, str]:
    """`python -m module` until it exits by itself (bounded); its status and output (kept in
    `cwd/name.log` too)."""
    status, stdout, stderr = await run_to_end(module, env, cwd)
    (cwd / f"{name}.log").write_text(stdout + stderr)
    return status, stdout + stderr


async def test_json_logs_carry_the_ids_and_no_secret(
    kafka_broker: KafkaCluster,
    postgres_server: PostgresServer,
    topic_name: str,
    tmp_path: Path,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    suffix = uuid.uuid4().hex[:12]
    smtp_password = f"smtp-pw-{suffix}"
    admin_token = f"admin-token-{suffix}"
    store_password = f"store-pw-{suffix}"
    wrong_store_password = f"wrong-pw-{suffix}"
    short_token = f"tok{suffix[:8]}"  # a token too short: refused, and never shown
    store_url = await asyncio.to_thread(
        postgres_server.create_role, f"logs_{suffix}", store_password
    )
    secrets = {
        smtp_password,
        admin_token,
        store_password,
        wrong_store_password,
        short_token,
        # as an SMTP AUTH PLAIN or LOGIN exchange would carry them
        base64.b64encode(f"\0mailer\0{smtp_password}".encode()).decode(),
        base64.b64encode(smtp_password.encode()).decode(),
    }
    await create_topic(bootstrap, topic_name, partitions=1)
    await create_topic(bootstrap, f"{topic_name}.dlq", partitions=1)
    inbox = Inbox()
    authenticator = FirstSessionRefused("mailer", smtp_password)
    api_port = closed_port()

    with smtp_server(inbox, authenticator=authenticator, auth_require_tls=False) as smtp_port:
        env = mailing_env(
            bootstrap_servers=bootstrap,
            topic=topic_name,
            store_url=store_url,
            admin_token=admin_token,
            smtp_port=smtp_port,
            smtp_password=smtp_password,
            log_format="json",
        )
        worker_log = tmp_path / "worker.log"
        async with (
            worker_process(env, tmp_path, worker_log) as worker,
            app_process(env, tmp_path, api_port) as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client,
        ):
            refused = await client.post(
                "/verification-emails", json=BODY, headers={"X-Correlation-ID": "req-refused"}
            )
            sent = await client.post(
                "/verification-emails", json=BODY, headers={"X-Correlation-ID": "req-sent"}
            )
            wrong_admin = await client.get(
                "/admin/messages", headers={"Authorization": "Bearer wrong-token-0123456789"}
            )
            right_admin = await client.get(
                "/admin/messages", headers={"Authorization": f"Bearer {admin_token}"}
            )
            # an invalid id is replaced, and what it held is not logged
            replaced = await client.get(
                "/health/live", headers={"X-Correlation-ID": f"Bearer {admin_token}"}
            )
            await eventually(lambda: _has_mail(inbox), timeout_s=60, interval_s=0.1)
            await eventually(
                lambda: _logged(worker_log, "not sent after"), timeout_s=30, interval_s=0.1
            )
            api.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await api.wait()
        assert worker.returncode == 0  # stopped by SIGTERM, gracefully

    # the error paths: the database refuses the password; the settings are invalid
    refused_db = {**env, "STORE__URL": store_url.replace(store_password, wrong_store_password)}
    invalid = {**env, "ADMIN__TOKEN": short_token}
    runs = await asyncio.gather(
        _run_to_end("app.worker", refused_db, tmp_path, "worker-refused-db"),
        _run_to_end(
            "app", {**refused_db, "API__PORT": str(closed_port())}, tmp_path, "api-refused-db"
        ),
        _run_to_end("app.worker", invalid, tmp_path, "worker-invalid"),
        _run_to_end("app", invalid, tmp_path, "api-invalid"),
    )

    api_text = (tmp_path / f"app-{api_port}.log").read_text()
    worker_text = worker_log.read_text()
    outputs = {"api": api_text, "worker": worker_text}
    names = ["worker, db refused", "api, db refused", "worker, settings", "api, settings"]
    outputs.update(zip(names, (text for _, text in runs), strict=True))
    leaks = {name: [s for s in secrets if s in text] for name, text in outputs.items()}
    assert leaks == {name: [] for name in outputs}

    assert [status for status, _ in runs[:2]] == [1, 3]  # could not start; startup failed
    assert "password authentication failed" in runs[0][1]
    _json_lines(runs[0][1])  # logged as configured, tracebacks included
    _json_lines(runs[1][1])
    for status, text in runs[2:]:
        assert status == 2
        assert "ADMIN__TOKEN: use at least 16 characters" in text

    assert (refused.status_code, sent.status_code) == (202, 202)
    assert (wrong_admin.status_code, right_admin.status_code) == (401, 200)
    assert replaced.headers["X-Correlation-ID"] != f"Bearer {admin_token}"
    assert authenticator.attempts >= 2
    sent_id, refused_id = sent.json()["event_id"], refused.json()["event_id"]

    api_lines = _json_lines(api_text)
    worker_lines = _json_lines(worker_text)
    assert {"timestamp", "level", "logger", "pid", "message"} <= set(api_lines[0])
    assert any(
        line["level"] == "DEBUG" and line["logger"].startswith("aiokafka") for line in api_lines
    )
    assert any(line["logger"] == "uvicorn.access" for line in api_lines)
    # the API: its access line and the publish, with the request's ids
    assert _with_ids(api_lines, "req-sent", None, "uvicorn.access")
    assert _with_ids(api_lines, "req-sent", sent_id, "kafka_events.delivery")
    # the worker: every line of its own while handling each record carries both ids
    assert _with_ids(worker_lines, "req-sent", sent_id, "app.worker.consumer")
    assert _with_ids(worker_lines, "req-refused", refused_id, "app.worker.consumer")
    for line in worker_lines:
        if line["logger"] == "app.worker.consumer" and sent_id in line["message"]:
            assert (line.get("correlation_id"), line.get("event_id")) == ("req-sent", sent_id)


def _with_ids(
    lines: list[dict[str, Any]], correlation_id: str, event_id: str | None, logger: str
) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line["logger"] == logger
        and line.get("correlation_id") == correlation_id
        and (event_id is None or line.get("event_id") == event_id)
    ]


async def _has_mail(inbox: Inbox) -> bool:
    return len(inbox.messages) >= 1


async def _logged(log: Path, text: str) -> bool:
    return text in await asyncio.to_thread(log.read_text)
