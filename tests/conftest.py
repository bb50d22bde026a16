"""Shared fixtures: real Kafka brokers started by the test session, per-test topics, apps.

Brokers run on free loopback ports in temporary folders, so the suite never touches a
developer's broker on 9092.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import (
    AdminSettings,
    KafkaSettings,
    PoliciesSettings,
    PolicyName,
    RateLimitSettings,
    ReplaySettings,
    Settings,
    StoreSettings,
    VerificationSettings,
)
from app.main import create_app
from app.state import AppState
from devtools.kafka import KafkaCluster
from kafka_events import Policy, ProducerConfig, SecurityConfig

# Broker start-up, topic creation and consumer-group joins are real and take seconds.
STARTUP_TIMEOUT_S = 60
FAST_FENCING = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One real Kafka node (KRaft, broker and controller), shared by the session."""
    with KafkaCluster(tmp_path_factory.mktemp("kafka-single"), nodes=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three real Kafka nodes: replication factor 3, min.insync.replicas=2, no unclean election.

    A killed broker is fenced (and leaves the ISR) after `broker.session.timeout.ms`; until then
    acks=all writes to its partitions stall. 3 s instead of Kafka's 9 s keeps fault tests short
    without changing what happens.
    """
    with KafkaCluster(
        tmp_path_factory.mktemp("kafka-cluster"),
        nodes=3,
        extra_properties=FAST_FENCING,
    ) as cluster:
        yield cluster


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name of this test's own."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:80]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


async def create_topic(
    bootstrap_servers: str,
    name: str,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(config or {}),
                )
            ]
        )
    finally:
        await admin.close()
    return name


@pytest.fixture
async def topic(kafka_broker: KafkaCluster, topic_name: str) -> str:
    """A fresh 3-partition topic on the single broker."""
    return await create_topic(kafka_broker.bootstrap_servers, topic_name)


_STORE_DIR: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _store_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    _STORE_DIR.append(tmp_path_factory.mktemp("stores"))


_TRANSPORT = set(ProducerConfig.model_fields)


def make_settings(
    bootstrap_servers: str,
    topic: str,
    *,
    policy: PolicyName = PolicyName.REPLICATED,
    store_url: str | None = None,
    replay: Mapping[str, object] | None = None,
    admin_token: str | None = None,
    security: SecurityConfig | None = None,
    **overrides: object,
) -> Settings:
    """Settings for a test app, ignoring any `.env` file.

    `overrides` go to the producer's transport options when they are one of those
    (linger_ms, connect_timeout_ms...), else to the feature's delivery `policy`.
    Each call gets a store of its own unless `store_url` is given.
    """
    transport = {k: v for k, v in overrides.items() if k in _TRANSPORT}
    policy_overrides = {k: v for k, v in overrides.items() if k not in _TRANSPORT}
    base = PoliciesSettings()
    policies = base.model_copy(
        update={
            policy.value: Policy.model_validate(
                {**base.get(policy).model_dump(), **policy_overrides}
            )
        }
    )
    if store_url is None:
        store_url = f"sqlite+aiosqlite:///{_STORE_DIR[0] / uuid.uuid4().hex}.db"
    return Settings(
        _env_file=None,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            security=security or SecurityConfig(),
            producer=ProducerConfig.model_validate(transport),
            policies=PoliciesSettings.model_validate(policies.model_dump()),
        ),
        store=StoreSettings(url=store_url),
        replay=ReplaySettings.model_validate(replay or {}),
        admin=AdminSettings.model_validate({"token": admin_token}),
        verification=VerificationSettings(topic=topic, policy=policy),
        # Tests send many requests for one address; tests/unit/test_rate_limit.py turns it on.
        rate_limit=RateLimitSettings(enabled=False),
    )


@dataclass(frozen=True)
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    state: AppState


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[RunningApp]:
    """The app with its real lifespan, and an HTTP client talking to it in-process."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=STARTUP_TIMEOUT_S, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        # The lifespan's state, as the server hands it to requests (read for observation only).
        yield RunningApp(app=app, client=client, state=manager._state["app"])


@pytest.fixture
async def client(kafka_broker: KafkaCluster, topic: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for an app publishing to this test's topic on the single broker."""
    async with running_app(make_settings(kafka_broker.bootstrap_servers, topic)) as running:
        yield running.client


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.05
) -> None:
    """Wait until `condition()` holds, for at most `timeout_s` (TimeoutError otherwise).

    For states with nothing to await (another process, an HTTP probe, a counter). A bounded
    poll, not a sleep standing in for synchronisation.
    """
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - no event exists to wait on
            await asyncio.sleep(interval_s)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports nobody listens on (for a server that
    takes a base port and the ones after it)."""
    for _ in range(50):
        base = closed_port()
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free loopback ports found")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
