"""Shared fixtures: real Kafka brokers started by the test session, per-test topics, apps.

Brokers run on free loopback ports in temporary folders, so the suite never touches a
developer's broker on 9092. The helpers these fixtures use live in `tests.helpers`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from devtools.kafka import KafkaCluster
from kafka_events.store import SqlStore
from tests.helpers.kafka import create_topic
from tests.helpers.service import STORE_DIR, make_settings, running_app


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One real Kafka node (KRaft, broker and controller), shared by the session."""
    with KafkaCluster(tmp_path_factory.mktemp("kafka-single"), nodes=1) as cluster:
        yield cluster


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name of this test's own."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:80]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def topic(kafka_broker: KafkaCluster, topic_name: str) -> str:
    """A fresh 3-partition topic on the single broker."""
    return await create_topic(kafka_broker.bootstrap_servers, topic_name)


@pytest.fixture(scope="session", autouse=True)
def _store_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    STORE_DIR.append(tmp_path_factory.mktemp("stores"))


@pytest.fixture
async def client(kafka_broker: KafkaCluster, topic: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for an app publishing to this test's topic on the single broker."""
    async with running_app(make_settings(kafka_broker.bootstrap_servers, topic)) as running:
        yield running.client


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A message store in a SQLite file of the test's own."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/messages.db")
    await store.open()
    yield store
    await store.close()
