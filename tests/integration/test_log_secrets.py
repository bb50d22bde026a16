"""No secret in the logs of a run, even one a client put in the wrong place.

The API and the worker run as processes, logging at DEBUG, in each format, with every secret
configured: an admin token, a SASL password (the broker has a SCRAM SASL_PLAINTEXT listener), an
SMTP password (a real SMTP server wants the login) and a PostgreSQL store whose role must give
its password. Clients then put secrets where they do not belong: in query strings (`?token=`,
`?password=`, `?api_key=`, a percent-encoded name), in headers (`Authorization`, `Cookie`,
`X-Api-Key`), in the user info of an absolute-form request target, and the admin token in a
path. Last, each process is started with a SASL password the broker refuses. No output of any
of them may hold a secret, as written, percent-encoded or base64-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from devtools.kafka import KafkaCluster, SecureListeners
from devtools.postgres import PostgresServer
from tests.helpers.kafka import create_topic
from tests.helpers.processes import app_process, mailing_env, run_to_end, worker_process
from tests.helpers.smtp import Inbox, smtp_server
from tests.helpers.waiting import closed_port, eventually

pytestmark = pytest.mark.kafka

SUFFIX = uuid.uuid4().hex[:10]
SASL_USER, SASL_PASSWORD = "api", f"sasl-pw-{SUFFIX}"
WRONG_SASL_PASSWORD = f"wrong-sasl-{SUFFIX}"
BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One node with a SCRAM SASL_PLAINTEXT listener (user `api`) beside the plaintext one."""
    with KafkaCluster(
        tmp_path_factory.mktemp("kafka-sasl"),
        nodes=1,
        secure=SecureListeners(users={SASL_USER: SASL_PASSWORD}, sasl_plaintext=True),
    ) as cluster:
        yield cluster


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}


async def _raw(port: int, request: bytes) -> bytes:
    """`request` as the bytes of one HTTP/1.1 exchange; the server's answer (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_reaches_the_logs_of_a_run(
    sasl_broker: KafkaCluster,
    postgres_server: PostgresServer,
    topic_name: str,
    tmp_path: Path,
    log_format: str,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    admin_token = f"admin-token-{suffix}"
    smtp_password = f"smtp-pw-{suffix}"
    store_password = f"store-pw-{suffix}"
    client_secrets = [f"client-{name}-{suffix}" for name in ("query", "header", "userinfo")]
    store_url = await asyncio.to_thread(
        postgres_server.create_role, f"secrets_{suffix}", store_password
    )
    secrets = {
        form
        for secret in (
            admin_token,
            smtp_password,
            store_password,
            SASL_PASSWORD,
            WRONG_SASL_PASSWORD,
            *client_secrets,
        )
        for form in _forms(secret)
    } | {base64.b64encode(f"\0mailer\0{smtp_password}".encode()).decode()}
    await create_topic(sasl_broker.bootstrap_servers, topic_name, partitions=1)
    await create_topic(sasl_broker.bootstrap_servers, f"{topic_name}.dlq", partitions=1)
    inbox = Inbox()
    api_port = closed_port()
    query, header, userinfo = client_secrets

    with smtp_server(
        inbox,
        auth_require_tls=False,
        authenticator=lambda *args: _login(smtp_password, *args),
    ) as smtp_port:
        env = {
            **mailing_env(
                bootstrap_servers=sasl_broker.sasl_plaintext_bootstrap_servers,
                topic=topic_name,
                store_url=store_url,
                admin_token=admin_token,
                smtp_port=smtp_port,
                smtp_password=smtp_password,
                log_format=log_format,
            ),
            "KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA__SECURITY__SASL_USERNAME": SASL_USER,
            "KAFKA__SECURITY__SASL_PASSWORD": SASL_PASSWORD,
        }
        worker_log = tmp_path / "worker.log"
        async with (
            worker_process(env, tmp_path, worker_log) as worker,
            app_process(env, tmp_path, api_port) as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client,
        ):
            sent = await client.post("/verification-emails", json=BODY)
            answers = [
                await client.get(f"/admin/messages?token={admin_token}"),
                await client.get(f"/admin/messages?access_token={query}&limit=5"),
                await client.get(f"/health/live?password={query}&api_key={smtp_password}"),
                await client.get(f"/health/live?apikey={SASL_PASSWORD};key={query}"),
                await client.get(f"/health/live?to%6Ben={query}"),
                await client.get(f"/health/live?Authorization=Bearer%20{admin_token}"),
                await client.get(f"/events/{admin_token}"),
                await client.get(f"/admin/messages/{store_password}"),
                await client.get(
                    "/admin/messages",
                    headers={
                        "Authorization": f"Bearer {header}",
                        "Cookie": f"session={header}",
                        "X-Api-Key": header,
                    },
                ),
            ]
            absolute = await _raw(
                api_port,
                f"GET http://admin:{userinfo}@127.0.0.1:{api_port}/health/live?secret={query}"
                f" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
            )
            malformed = await _raw(
                api_port,
                f"GET /health/live?token={query} HTTP/1.1\r\nAuthorization Bearer {header}"
                "\r\n\r\n".encode(),
            )
            await eventually(lambda: _has_mail(inbox), timeout_s=60, interval_s=0.1)
            api.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await api.wait()
        assert worker.returncode == 0  # stopped by SIGTERM, gracefully

    # a connection error: the broker refuses the SASL password
    refused = {**env, "KAFKA__SECURITY__SASL_PASSWORD": WRONG_SASL_PASSWORD}
    runs = await asyncio.gather(
        run_to_end("app.worker", refused, tmp_path, timeout_s=60),
        run_to_end("app", {**refused, "API__PORT": str(closed_port())}, tmp_path, timeout_s=60),
    )

    outputs = {
        "api": (tmp_path / f"app-{api_port}.log").read_text(),
        "worker": worker_log.read_text(),
        "worker, SASL refused": runs[0][1] + runs[0][2],
        "api, SASL refused": runs[1][1] + runs[1][2],
    }
    leaks = {name: sorted(s for s in secrets if s in text) for name, text in outputs.items()}
    assert leaks == {name: [] for name in outputs}

    # the requests were made and logged, with their secrets masked
    assert sent.status_code == 202
    assert [a.status_code for a in answers] == [401, 401, 200, 200, 200, 200, 404, 401, 401]
    assert absolute.startswith(b"HTTP/1.1 200")  # the absolute form is routed (RFC 9112)
    assert malformed.startswith(b"HTTP/1.1 400")
    api_text = outputs["api"]
    assert api_text.count("/health/live?") >= 4
    assert "token=***" in api_text
    assert "password=***" in api_text
    assert "/events/***" in api_text
    assert inbox.messages
    assert [status for status, _, _ in runs] == [1, 1]
    assert "KAFKA__SECURITY__SASL_PASSWORD" in outputs["api, SASL refused"]


def _login(password: str, *args: object) -> object:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    data = args[4]
    right = isinstance(data, LoginPassword) and data.password == password.encode()
    return AuthResult(success=right, handled=False)


async def _has_mail(inbox: Inbox) -> bool:
    return len(inbox.messages) >= 1
