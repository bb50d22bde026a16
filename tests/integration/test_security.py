"""Kafka over SASL (SCRAM) and TLS, against a real broker with secured listeners.

One broker for the module serves SASL_SSL and SASL_PLAINTEXT (SCRAM-SHA-256 and -512, a
throwaway CA) and checks ACLs (allowing what no ACL denies); topics and ACLs are created on its
plaintext listener, everything else goes through the secured ones. What is shown: the API
publishes and reads replies, the worker consumes and replies, all over SASL_SSL; a wrong
password, an untrusted certificate or a denied transactional id stops the start-up at once
with a message that names the cause (and the user, never the password).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.protocol.admin import CreateAclsRequest  # type: ignore[import-untyped]
from pydantic import SecretStr

from app.config import PolicyName, ReplySettings, Settings, WorkerSettings
from app.worker import __main__ as worker_main
from app.worker.consumer import VerificationEmailWorker
from devtools.kafka import KafkaCluster, SecureListeners
from kafka_events import SaslMechanism, SecurityConfig, SecurityProtocol, options
from kafka_events.errors import AccessRefused
from tests.helpers.kafka import create_topic, read_at
from tests.helpers.processes import run_to_end
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port, eventually

pytestmark = pytest.mark.kafka

USER, PASSWORD = "api", "api-secret-7Qx"
WRONG_PASSWORD = "not-the-password-3Zk"
BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}
# A refusal must end the start-up well within one connection attempt's deadline, not hang.
CONNECT_TIMEOUT_MS = 5000
PROMPT_S = CONNECT_TIMEOUT_MS / 1000 + 3
# Kafka's ACL codes (org.apache.kafka.common.acl / resource)
_TRANSACTIONAL_ID, _LITERAL, _ALL, _DENY = 5, 3, 2, 2


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One node with SASL_SSL and SASL_PLAINTEXT listeners, the SCRAM user `api`, and ACLs."""
    with KafkaCluster(
        tmp_path_factory.mktemp("kafka-secured"),
        nodes=1,
        secure=SecureListeners(users={USER: PASSWORD}, sasl_plaintext=True),
        extra_properties={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "true",
        },
    ) as cluster:
        yield cluster


def security(
    cluster: KafkaCluster,
    *,
    protocol: SecurityProtocol = SecurityProtocol.SASL_SSL,
    mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512,
    password: str = PASSWORD,
    cafile: Path | None = None,
) -> tuple[str, SecurityConfig]:
    """(bootstrap servers, security settings) for the listener of `protocol`."""
    tls = protocol is SecurityProtocol.SASL_SSL
    bootstrap = (
        cluster.sasl_ssl_bootstrap_servers if tls else cluster.sasl_plaintext_bootstrap_servers
    )
    return bootstrap, SecurityConfig(
        protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=USER,
        sasl_password=SecretStr(password),
        ssl_cafile=(cafile or cluster.ca_file) if tls else None,
    )


def secured_settings(cluster: KafkaCluster, topic: str, **kwargs: Any) -> Settings:
    bootstrap, secured = security(cluster, **kwargs)
    base = make_settings(bootstrap, topic, security=secured, connect_timeout_ms=CONNECT_TIMEOUT_MS)
    # a reply topic of this test's own, created by the app (over the secured listener)
    return base.model_copy(
        update={"reply": ReplySettings(topic=f"{topic}.reply", replication_factor=1)}
    )


def client_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments for an independent client, from the app's own settings."""
    client = options.client_options(settings.kafka)
    del client["bootstrap_servers"]
    return client


@pytest.fixture
def untrusted_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the broker's certificate."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        (SecurityProtocol.SASL_SSL, SaslMechanism.SCRAM_SHA_512),
        (SecurityProtocol.SASL_PLAINTEXT, SaslMechanism.SCRAM_SHA_256),
    ],
)
async def test_the_api_publishes_over_the_secured_listener(
    secured_broker: KafkaCluster,
    topic_name: str,
    protocol: SecurityProtocol,
    mechanism: SaslMechanism,
) -> None:
    await create_topic(secured_broker.bootstrap_servers, topic_name, partitions=1)
    settings = secured_settings(secured_broker, topic_name, protocol=protocol, mechanism=mechanism)

    async with running_app(settings) as running:

        async def ready_now() -> bool:  # the reply reader connects in the background
            return (await running.client.get("/health/ready")).status_code == 200

        await eventually(ready_now, timeout_s=30, interval_s=0.1)
        ready = await running.client.get("/health/ready")
        response = await running.client.post("/verification-emails", json=BODY)

    assert ready.status_code == 200, ready.text
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["confirmed"] is True
    assert isinstance(receipt["offset"], int)
    record = await read_at(
        settings.kafka.bootstrap_servers,
        topic_name,
        receipt["partition"],
        receipt["offset"],
        **client_security(settings),
    )
    assert dict(record.headers)["event_id"] == receipt["event_id"].encode()


async def test_request_reply_through_the_worker_over_sasl_ssl(
    secured_broker: KafkaCluster, topic_name: str
) -> None:
    # publisher, reply reader, and the worker's consumer and producer: all over SASL_SSL
    await create_topic(secured_broker.bootstrap_servers, topic_name, partitions=1)
    settings = secured_settings(secured_broker, topic_name)
    settings = settings.model_copy(
        update={
            "worker": WorkerSettings(
                group_id=f"g-{topic_name}", dead_letter_topic=f"{topic_name}.dlq"
            )
        }
    )
    worker = VerificationEmailWorker(settings)
    await worker.start()
    try:
        async with running_app(settings) as running:

            async def replies_read() -> bool:
                return running.state.replies.ready

            await eventually(replies_read, timeout_s=30)
            response = await running.client.post(
                "/verification-emails", params={"wait_for": "delivery"}, json=BODY
            )
    finally:
        await worker.stop()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"]["status"] == "sent"
    assert body["reply"]["event_id"] == body["receipt"]["event_id"]


async def _refused_start(settings: Settings) -> tuple[float, str]:
    """The app's start-up with `settings`, which must raise AccessRefused: seconds and message."""
    started = time.monotonic()
    with pytest.raises(AccessRefused) as refused:
        async with running_app(settings):
            pass
    return time.monotonic() - started, str(refused.value)


async def test_a_wrong_password_stops_the_api_start_up_at_once(
    secured_broker: KafkaCluster, topic_name: str
) -> None:
    settings = secured_settings(secured_broker, topic_name, password=WRONG_PASSWORD)

    elapsed, message = await _refused_start(settings)

    assert elapsed < PROMPT_S
    assert "SASL authentication failed for user 'api' (SCRAM-SHA-512)" in message
    assert "check KAFKA__SECURITY__SASL_USERNAME and KAFKA__SECURITY__SASL_PASSWORD" in message
    assert WRONG_PASSWORD not in message
    assert "\n" not in message


async def test_an_untrusted_broker_certificate_stops_the_api_start_up_at_once(
    secured_broker: KafkaCluster, topic_name: str, untrusted_ca: Path
) -> None:
    settings = secured_settings(secured_broker, topic_name, cafile=untrusted_ca)

    elapsed, message = await _refused_start(settings)

    assert elapsed < PROMPT_S
    assert "TLS: the broker's certificate" in message
    assert "unable to get local issuer certificate" in message
    assert f"the client trusts {untrusted_ca}" in message


async def test_a_denied_transactional_id_stops_the_api_start_up_at_once(
    secured_broker: KafkaCluster, topic_name: str
) -> None:
    transactional_id = f"{topic_name}-tx"
    admin = AIOKafkaAdminClient(bootstrap_servers=secured_broker.bootstrap_servers)
    await admin.start()
    try:
        deny = CreateAclsRequest(
            _TRANSACTIONAL_ID, transactional_id, _LITERAL, f"User:{USER}", "*", _ALL, _DENY
        )
        created = await admin._send_request(deny)
    finally:
        await admin.close()
    assert [r[0] for r in created.creation_responses] == [0], created
    settings = make_settings(
        secured_broker.sasl_ssl_bootstrap_servers,
        topic_name,
        policy=PolicyName.REPLICATED,
        security=security(secured_broker)[1],
        connect_timeout_ms=CONNECT_TIMEOUT_MS,
        transactional_id=transactional_id,
    )

    elapsed, message = await _refused_start(settings)

    assert elapsed < PROMPT_S
    assert "user 'api' is not authorised" in message
    assert "TransactionalIdAuthorizationFailed" in message


async def test_a_wrong_password_stops_the_worker_with_status_1(
    secured_broker: KafkaCluster, topic_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = secured_settings(secured_broker, topic_name, password=WRONG_PASSWORD)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="app.worker"):
        status = await worker_main.run(settings)
    elapsed = time.monotonic() - started

    assert status == 1
    assert elapsed < PROMPT_S
    [line] = [r.getMessage() for r in caplog.records if r.name == "app.worker"]
    assert line.startswith("the worker could not start: Kafka refused this client: SASL")
    assert "user 'api'" in line
    assert WRONG_PASSWORD not in caplog.text


async def test_python_m_app_with_a_wrong_password_exits_with_one_clear_line(
    secured_broker: KafkaCluster, tmp_path: Path
) -> None:
    bootstrap, _ = security(secured_broker)
    env = {
        "API__PORT": str(closed_port()),
        "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/messages.db",
        "KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        "KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA__SECURITY__SASL_USERNAME": USER,
        "KAFKA__SECURITY__SASL_PASSWORD": WRONG_PASSWORD,
        "KAFKA__SECURITY__SSL_CAFILE": str(secured_broker.ca_file),
    }
    status, stdout, stderr = await run_to_end("app", env, tmp_path, timeout_s=30)  # no .env

    output = stdout + stderr
    assert status == 1, output
    [line] = [line for line in output.splitlines() if "Kafka refused" in line]
    assert line.startswith("Kafka refused this client: SASL authentication failed for user 'api'")
    assert stderr.rstrip().endswith(line)
    assert "Traceback" not in output
    assert WRONG_PASSWORD not in output
