"""The rate limit shared in a real Redis server (`RATE_LIMIT__REDIS_URL`): one limit for every
process, and a bounded, documented answer when Redis stops or freezes while the service runs.

Each test has a Redis of its own (devtools/redis.py: Debian's redis-server on a free loopback
port), with a password, so that it can be stopped and the password looked for in the logs.
Without a broker (a closed port) every accepted request ends in 503 (recorded for replay),
which still counts; the tests that need `202` or a ready service use the real broker.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from app.config import RateLimitFailure, RateLimitSettings, Settings
from devtools.kafka import KafkaCluster
from devtools.redis import RedisServer
from tests.helpers.processes import app_process
from tests.helpers.service import RunningApp, make_settings, running_app
from tests.helpers.waiting import closed_port, eventually

PASSWORD = "redis-pass-7f3a9c"  # looked for in every log line
VALID = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis server of this test's own, with a password, stopped at the end."""
    with (
        tempfile.TemporaryDirectory(prefix="redis-", ignore_cleanup_errors=True) as workdir,
        RedisServer(Path(workdir), closed_port(), password=PASSWORD) as server,
    ):
        yield server


def _settings(
    redis: RedisServer,
    mode: RateLimitFailure,
    *,
    bootstrap_servers: str | None = None,
    topic: str = "t-rate-redis",
) -> Settings:
    settings = make_settings(
        bootstrap_servers or f"127.0.0.1:{closed_port()}",
        topic,
        delivery_timeout_ms=300 if bootstrap_servers is None else 30000,
        connect_timeout_ms=200 if bootstrap_servers is None else 10000,
    )
    rate_limit = RateLimitSettings(per_email=2, redis_url=redis.url, on_redis_error=mode)
    return settings.model_copy(update={"rate_limit": rate_limit})


async def _statuses(app: RunningApp, email: str, count: int) -> list[int]:
    return [
        (await app.client.post("/verification-emails", json={**VALID, "email": email})).status_code
        for _ in range(count)
    ]


def _redis_errors(mode: RateLimitFailure) -> float:
    value = REGISTRY.get_sample_value(
        "kafka_events_rate_limit_redis_errors_total", {"mode": mode.value}
    )
    return value or 0.0


def _rate_limit_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "app.ratelimit" and r.levelno == level
    ]


async def test_fail_open_checks_in_memory_while_redis_is_stopped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.ratelimit")
    async with running_app(_settings(redis_server, RateLimitFailure.OPEN)) as app:
        assert await _statuses(app, "ada@example.com", 3) == [503, 503, 429]  # Redis counts
        errors_before = _redis_errors(RateLimitFailure.OPEN)

        await asyncio.to_thread(redis_server.stop)
        # this process's own limit instead: never a 500, still a limit
        stopped = await _statuses(app, "ada@example.com", 3)
        errors_while_stopped = _redis_errors(RateLimitFailure.OPEN) - errors_before
        warnings = _rate_limit_logs(caplog, logging.WARNING)

        await asyncio.to_thread(redis_server.start)

        async def redis_answers_again() -> bool:
            await app.client.post("/verification-emails", json={**VALID, "email": "new@x.org"})
            return any("answers again" in m for m in _rate_limit_logs(caplog, logging.INFO))

        await eventually(redis_answers_again, timeout_s=20, interval_s=0.2)
        # a restarted Redis (no persistence) has forgotten ada: counted afresh, in Redis again
        after = await _statuses(app, "Ada@example.com", 3)

    assert stopped == [503, 503, 429]
    assert errors_while_stopped == 3
    assert len(warnings) == 1  # not one per request
    assert "failing open" in warnings[0]
    assert "redis://:***@127.0.0.1" in warnings[0]
    assert after == [503, 503, 429]
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


async def test_a_frozen_redis_costs_a_bounded_wait_not_a_hang(redis_server: RedisServer) -> None:
    async with running_app(_settings(redis_server, RateLimitFailure.OPEN)) as app:
        assert await _statuses(app, "ada@example.com", 1) == [503]
        await asyncio.to_thread(redis_server.pause)  # connections stay open, nothing answers
        try:
            async with asyncio.timeout(10):  # a hang, not a speed: the bound is 500 ms a call
                frozen = await _statuses(app, "ada@example.com", 3)
        finally:
            await asyncio.to_thread(redis_server.resume)

    assert frozen == [503, 503, 429]  # checked in memory once Redis did not answer in time


@pytest.mark.kafka
async def test_fail_closed_refuses_with_503_and_is_not_ready_while_redis_is_stopped(
    redis_server: RedisServer, kafka_broker: KafkaCluster, topic: str
) -> None:
    settings = _settings(
        redis_server,
        RateLimitFailure.CLOSED,
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topic=topic,
    )
    async with running_app(settings) as app:

        async def ready() -> bool:
            return (await app.client.get("/health/ready")).status_code == 200

        await eventually(ready, timeout_s=30, interval_s=0.1)
        accepted = await _statuses(app, "ada@example.com", 1)
        errors_before = _redis_errors(RateLimitFailure.CLOSED)

        await asyncio.to_thread(redis_server.stop)
        refused = await app.client.post("/verification-emails", json=VALID)
        not_ready = await app.client.get("/health/ready")
        recorded = await app.state.store.list(status=None, limit=10, after_seq=0)
        errors = _redis_errors(RateLimitFailure.CLOSED) - errors_before

        await asyncio.to_thread(redis_server.start)
        await eventually(ready, timeout_s=20, interval_s=0.1)
        again = await _statuses(app, "grace@example.com", 1)

    assert accepted == [202]
    assert refused.status_code == 503
    assert refused.json() == {
        "error": "rate_limit_unavailable",
        "detail": "the rate limit cannot be checked right now; nothing was sent",
    }
    assert refused.headers["Retry-After"] == "5"
    assert recorded == []  # nothing published, nothing kept for replay
    assert errors == 1
    assert not_ready.status_code == 503
    assert not_ready.json()["error"] == "not_ready"
    assert "Redis" in not_ready.json()["detail"]
    assert PASSWORD not in not_ready.text
    assert again == [202]


@pytest.mark.kafka
async def test_two_api_processes_share_one_limit(
    redis_server: RedisServer, kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    """Two replicas (`python -m app` each) on one Redis: each address's requests alternate
    between them, and together they accept `PER_EMAIL`, not `PER_EMAIL` each.

    (Two replicas rather than `API__WORKERS=2`: the counting is the same, and on a busy
    machine uvicorn's supervisor kills a worker that takes over 5 s to import and start.)"""
    ports = [closed_port(), closed_port()]

    def env(port: int) -> dict[str, str]:
        return {
            "LOG__FORMAT": "json",
            "KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "VERIFICATION__TOPIC": topic,
            "REPLY__TOPIC": f"{topic}.reply",
            "REPLY__REPLICATION_FACTOR": "1",
            "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/store-{port}.db",
            "RATE_LIMIT__PER_EMAIL": "3",
            "RATE_LIMIT__REDIS_URL": redis_server.url,
            # The claim here is the shared count: a burst on a busy machine must not fail over
            # to each process's memory (the failure modes have their own tests above).
            "RATE_LIMIT__REDIS_TIMEOUT_MS": "5000",
        }

    addresses = [f"user{n}@example.com" for n in range(10)]
    async with (
        app_process(env(ports[0]), tmp_path, ports[0]),
        app_process(env(ports[1]), tmp_path, ports[1]),
        httpx.AsyncClient(timeout=30) as client,
    ):

        async def post(email: str, port: int) -> tuple[str, int, int]:
            response = await client.post(
                f"http://127.0.0.1:{port}/verification-emails", json={**VALID, "email": email}
            )
            return email, port, response.status_code

        answers = []
        for round_ in range(6):  # every address at once, to one replica then the other
            port = ports[round_ % 2]
            answers += await asyncio.gather(*(post(email, port) for email in addresses))

    accepted = Counter(email for email, _, status in answers if status == 202)
    refused = Counter(email for email, _, status in answers if status == 429)
    assert set(accepted.values()) == {3}  # 3 per address in all, not 3 per process
    assert set(refused.values()) == {3}
    assert len(accepted) == len(addresses)
    # rounds 1 and 3 on the first, 2 on the second; then both refuse
    by_port = Counter((port, status) for _, port, status in answers)
    assert by_port == {
        (ports[0], 202): 20,
        (ports[1], 202): 10,
        (ports[0], 429): 10,
        (ports[1], 429): 20,
    }
    logs = [(tmp_path / f"app-{port}.log").read_text() for port in ports]
    for log in logs:
        assert "rate limit: shared in Redis at redis://:***@127.0.0.1" in log
        assert PASSWORD not in log
        assert "did not answer" not in log  # every request was counted in Redis
