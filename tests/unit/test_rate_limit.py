"""Per-address rate limit of POST /verification-emails, in memory (no broker: a closed port).

Without a broker every accepted request ends in 503 (recorded for replay), which still counts:
its message would reach the inbox once Kafka is back. The Redis store has its tests in
tests/integration/test_rate_limit_redis.py, against a real Redis server.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from app.config import RateLimitSettings, Settings, SettingsError, load_settings
from app.ratelimit import MemoryRateLimiter, RateLimited, normalise_address
from tests.helpers.service import RunningApp, make_settings, running_app
from tests.helpers.waiting import closed_port

VALID = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


def _settings(**rate_limit: object) -> Settings:
    settings = make_settings(
        f"127.0.0.1:{closed_port()}", "t-rate", delivery_timeout_ms=300, connect_timeout_ms=200
    )
    return settings.model_copy(
        update={"rate_limit": RateLimitSettings.model_validate({"per_email": 2, **rate_limit})}
    )


@pytest.fixture
async def app() -> AsyncIterator[RunningApp]:
    async with running_app(_settings()) as running:
        yield running


async def _post(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/verification-emails", json={**VALID, "email": email})


async def _recorded_events(app: RunningApp) -> list[str]:
    """Event ids in the store (the relay updates their attempts meanwhile)."""
    return [r.event_id for r in await app.state.store.list(status=None, limit=100, after_seq=0)]


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("ada@example.com", "ada@example.com"),
        ("Ada@Example.COM", "ada@example.com"),
        ("ada+newsletter@example.com", "ada@example.com"),
        ("+only@example.com", "+only@example.com"),
        ("ada@bücher.example", "ada@xn--bcher-kva.example"),
        ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
    ],
)
def test_addresses_are_counted_per_inbox(given: str, key: str) -> None:
    assert normalise_address(given) == key


async def test_a_slot_frees_a_window_after_it_was_taken() -> None:
    limiter = MemoryRateLimiter(RateLimitSettings(per_email=2, window_s=1))
    limiter.take("ada@example.com")
    limiter.take("ADA@example.com")

    with pytest.raises(RateLimited) as refused:
        limiter.take("ada@example.com")
    limiter.take("grace@example.com")  # other addresses are not affected

    assert refused.value.retry_after_s == 1

    async def allowed() -> bool:
        try:
            await limiter.acquire("ada@example.com")
        except RateLimited:
            return False
        return True

    async with asyncio.timeout(3):
        while not await allowed():  # noqa: ASYNC110 - the window passes with the clock
            await asyncio.sleep(0.05)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_slot_frees_exactly_a_window_after_the_request_that_took_it() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(RateLimitSettings(per_email=2, window_s=10), clock=clock)
    limiter.take("ada@example.com")  # t=0
    clock.now += 3
    limiter.take("ada@example.com")  # t=3
    clock.now += 2

    with pytest.raises(RateLimited) as refused:  # t=5
        limiter.take("ada@example.com")
    assert refused.value.retry_after_s == 5  # when the slot of t=0 frees
    clock.now += 5
    with pytest.raises(RateLimited):  # t=10: the window still includes t=0
        limiter.take("ada@example.com")
    clock.now += 0.001
    limiter.take("ada@example.com")  # t=10.001: t=0 has left; now t=3 and t=10.001
    clock.now += 1
    with pytest.raises(RateLimited) as refused_again:
        limiter.take("ada@example.com")
    assert refused_again.value.retry_after_s == 2  # t=3's slot frees at t=13


def test_addresses_are_forgotten_once_their_last_request_left_the_window() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(RateLimitSettings(per_email=1, window_s=60), clock=clock)
    for n in range(100):
        limiter.take(f"user-{n}@example.com")
        clock.now += 1
    limiter.take("user-0@example.com")  # its request of t=0 has left the window

    # requests of the last 60 s (t=40..99) and the new one; the older are forgotten
    assert len(limiter) == 61
    clock.now += 61
    limiter.take("grace@example.com")
    assert len(limiter) == 1


def _evictions() -> float:
    return REGISTRY.get_sample_value("kafka_events_rate_limit_evictions_total") or 0.0


def test_at_the_cap_the_least_recently_seen_address_is_forgotten() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(
        RateLimitSettings(per_email=1, window_s=60, max_addresses=2), clock=clock
    )
    evicted_before = _evictions()
    limiter.take("ada@example.com")
    limiter.take("grace@example.com")
    limiter.take("alan@example.com")  # the cap: ada, the least recently seen, is forgotten

    assert len(limiter) == 2
    with pytest.raises(RateLimited):
        limiter.take("grace@example.com")  # still counted
    limiter.take("ada@example.com")  # forgotten within its window: its count restarted
    assert len(limiter) == 2  # and grace made room for it
    assert _evictions() - evicted_before == 2


def test_memory_stays_bounded_by_the_cap_whatever_the_number_of_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """40,000 new addresses (sign-ups) within one window: ten times the cap."""
    cap = 4_000
    clock = FakeClock()
    limiter = MemoryRateLimiter(RateLimitSettings(per_email=1, max_addresses=cap), clock=clock)
    tracked: list[int] = []
    traced: list[int] = []
    tracemalloc.start()
    try:
        for n in range(10 * cap):
            limiter.take(f"user-{n}@example.com")
            clock.now += 0.004  # 250 new addresses a second: 160 s, within the window
            if n % 1000 == 999:
                tracked.append(len(limiter))
            if n % cap == cap - 1:
                traced.append(tracemalloc.get_traced_memory()[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert max(tracked) == cap  # at the cap, never over it
    assert tracked[-1] == cap
    # no growth with the addresses past the cap, but for this test's own lists and the
    # captured warnings (a few KB)
    assert max(traced[2:]) <= min(traced[2:]) * 1.1 + 64 * 1024
    # and a compact entry per address: at most 400 bytes (a deque under a hex key took 1 KB)
    assert peak < 400 * cap
    limiter.take("user-0@example.com")  # evicted long ago: counted afresh, not refused
    warnings = [r for r in caplog.records if r.name == "app.ratelimit" and r.levelname == "WARNING"]
    # about once a minute (160 s of fake time), not once per eviction
    assert 1 <= len(warnings) <= 4
    assert "RATE_LIMIT__MAX_ADDRESSES" in warnings[0].getMessage()


async def test_over_the_limit_gets_429_and_nothing_is_published(app: RunningApp) -> None:
    first = await _post(app.client, "ada@example.com")
    second = await _post(app.client, "Ada+again@EXAMPLE.com")  # the same inbox
    recorded = await _recorded_events(app)

    third = await _post(app.client, "ADA@example.com")

    assert (first.status_code, second.status_code) == (503, 503)  # no broker; both count
    assert third.status_code == 429
    body = third.json()
    assert body["error"] == "rate_limited"
    assert "at most 2" in body["detail"]
    retry_after = int(third.headers["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert body["retry_after_s"] == retry_after
    # nothing new recorded: the refused request was neither published nor stored
    assert await _recorded_events(app) == recorded
    assert len(recorded) == 2
    assert (await _post(app.client, "grace@example.com")).status_code == 503


async def test_invalid_requests_do_not_count(app: RunningApp) -> None:
    for _ in range(3):
        invalid = await app.client.post(
            "/verification-emails", json={**VALID, "redirect_url": "ftp://x.example/"}
        )
        assert invalid.status_code == 422

    assert (await _post(app.client, "ada@example.com")).status_code == 503


async def test_a_refused_reply_wait_counts_too(app: RunningApp) -> None:
    statuses = [
        (
            await app.client.post(
                "/verification-emails", params={"wait_for": "delivery"}, json=VALID
            )
        ).status_code
        for _ in range(3)
    ]

    assert statuses == [503, 503, 429]


async def test_the_limit_can_be_turned_off() -> None:
    async with running_app(_settings(enabled=False, per_email=1)) as running:
        statuses = [(await _post(running.client, "ada@example.com")).status_code for _ in range(3)]

    assert statuses == [503, 503, 503]


async def test_openapi_documents_the_429_with_retry_after(app: RunningApp) -> None:
    spec = (await app.client.get("/openapi.json")).json()

    refused = spec["paths"]["/verification-emails"]["post"]["responses"]["429"]
    example = refused["content"]["application/json"]["examples"]["rate_limited"]["value"]
    assert example["error"] == "rate_limited"
    assert set(example) == {"error", "detail", "retry_after_s"}
    assert refused["headers"]["Retry-After"]["schema"]["type"] == "integer"


async def test_openapi_documents_the_503_of_a_redis_that_does_not_answer(app: RunningApp) -> None:
    spec = (await app.client.get("/openapi.json")).json()

    unavailable = spec["paths"]["/verification-emails"]["post"]["responses"]["503"]
    examples = unavailable["content"]["application/json"]["examples"]
    assert examples["rate_limit_unavailable"]["value"]["error"] == "rate_limit_unavailable"
    assert "RATE_LIMIT__ON_REDIS_ERROR=closed" in unavailable["description"]
    assert "Retry-After" in unavailable["headers"]


def test_the_redis_url_is_checked_and_its_password_never_shown() -> None:
    settings = load_settings(
        _env_file=None, rate_limit={"redis_url": "redis://:s3cret-pw@redis.internal:6379/0"}
    )

    assert "s3cret-pw" not in repr(settings) + str(settings)
    assert "redis://:***@redis.internal:6379/0" in repr(settings.rate_limit)
    assert load_settings(_env_file=None, rate_limit={"redis_url": ""}).rate_limit.redis_url is None
    with pytest.raises(SettingsError) as invalid:
        load_settings(_env_file=None, rate_limit={"redis_url": "http://:s3cret-pw@redis.internal"})
    assert "RATE_LIMIT__REDIS_URL: use redis://" in str(invalid.value)
    assert "s3cret-pw" not in str(invalid.value)
