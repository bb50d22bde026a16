"""The in-memory rate-limit store: its fixed storage, its table of keys, and its decisions
against a plain model of the same moving window (tests/unit/test_rate_limit.py has the rest)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tracemalloc
from collections import OrderedDict
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from app.config import MAX_MEMORY_BYTES, RateLimitSettings, SettingsError, load_settings
from app.ratelimit import MemoryRateLimiter, RateLimited, normalise_address


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ReferenceLimiter:
    """The moving window as plainly as it can be written: every address's latest `limit`
    request times in a list, the addresses in an `OrderedDict` by their latest request."""

    def __init__(self, *, limit: int, window_s: int, max_addresses: int) -> None:
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self.requests: OrderedDict[str, list[float]] = OrderedDict()
        self.evictions = 0
        self.expiries = 0

    def take(self, email: str, now: float) -> int | None:
        """None if allowed, else the Retry-After in seconds."""
        window_start = now - self.window_s
        for address in [a for a, times in self.requests.items() if times[-1] < window_start]:
            del self.requests[address]
            self.expiries += 1
        key = normalise_address(email)
        times = self.requests.get(key)
        if times is None:
            if len(self.requests) >= self.max_addresses:
                self.requests.popitem(last=False)
                self.evictions += 1
            self.requests[key] = [now]
            return None
        if len(times) == self.limit and times[0] >= window_start:
            return RateLimited.until(
                limit=self.limit, window_s=self.window_s, frees_in_s=times[0] + self.window_s - now
            ).retry_after_s
        self.requests.move_to_end(key)
        self.requests[key] = [*times, now][-self.limit :]
        return None


def _evictions() -> float:
    return REGISTRY.get_sample_value("kafka_events_rate_limit_evictions_total") or 0.0


@pytest.mark.parametrize(("limit", "seed"), [(1, 1), (3, 2), (5, 3)])
def test_every_decision_matches_the_model_through_many_evictions_and_expiries(
    limit: int, seed: int
) -> None:
    """20,000 requests from 200 addresses into 64 slots: the table fills, evicts and forgets
    addresses all the time, so its probe runs are rebuilt by thousands of deletions."""
    rng = random.Random(seed)
    window_s, cap = 10, 64
    clock = FakeClock()
    settings = RateLimitSettings(per_email=limit, window_s=window_s, max_addresses=cap)
    limiter = MemoryRateLimiter(settings, clock=clock)
    model = ReferenceLimiter(limit=limit, window_s=window_s, max_addresses=cap)
    evicted_before = _evictions()
    refused = 0
    for step in range(20_000):
        # mostly small steps, sometimes one past the whole window
        clock.now += rng.choices((0.0, 0.001, 0.01, 0.1, 1.0, window_s), (4, 8, 8, 4, 1, 0.02))[0]
        # a few busy addresses (refused often) and many others (evicted often)
        number = rng.randrange(8) if rng.random() < 0.5 else rng.randrange(200)
        email = f"User-{number}@Example.com"
        expected = model.take(email, clock.now)
        try:
            limiter.take(email)
            got = None
        except RateLimited as error:
            got = error.retry_after_s
            refused += 1
        assert (step, got) == (step, expected)
        assert len(limiter) == len(model.requests)
    assert _evictions() - evicted_before == model.evictions
    # the run covered refusals, evictions and expiries, many times each
    assert refused > 1000
    assert model.evictions > 1000
    assert model.expiries > 1000


def test_addresses_forgotten_with_the_window_free_their_slots_without_evicting() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(
        RateLimitSettings(per_email=2, window_s=60, max_addresses=64), clock=clock
    )
    evicted_before = _evictions()
    for round_ in range(50):
        for n in range(64):
            limiter.take(f"round-{round_}-{n}@example.com")
        assert len(limiter) == 64
        clock.now += 60.001  # every request of the round has left the window
    assert _evictions() == evicted_before
    limiter.take("round-49-0@example.com")
    assert len(limiter) == 1
    limiter.take("round-49-0@example.com")
    with pytest.raises(RateLimited):
        limiter.take("round-49-0@example.com")


def test_its_storage_is_reserved_when_built_and_does_not_grow_with_addresses() -> None:
    clock = FakeClock()
    settings = RateLimitSettings(per_email=5, max_addresses=10_000)
    limiter = MemoryRateLimiter(settings, clock=clock)
    assert limiter.reserved_bytes == settings.memory_bytes() == 10_000 * (40 + 8 * 5)
    emails = [f"user-{n}@example.com" for n in range(50_000)]
    ours = [tracemalloc.Filter(True, str(Path(__file__).parents[2] / "app" / "ratelimit" / "*"))]
    tracemalloc.start()
    try:
        limiter.take("warm-up@example.com")
        before = tracemalloc.take_snapshot().filter_traces(ours)
        for email in emails:  # up to the cap, then each evicts one
            limiter.take(email)
            clock.now += 0.001
        after = tracemalloc.take_snapshot().filter_traces(ours)
    finally:
        tracemalloc.stop()

    assert len(limiter) == 10_000
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 1024  # nothing per address: at most a few objects of the moment


_RESIDENT = """
import sys
from pathlib import Path
from app.config import RateLimitSettings
from app.ratelimit import MemoryRateLimiter

def resident_kib():
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

class Clock:
    now = 1000.0
    def __call__(self):
        self.now += 0.001
        return self.now

before = resident_kib()
limiter = MemoryRateLimiter(RateLimitSettings(max_addresses=500_000), clock=Clock())
built = resident_kib()
for n in range(50_000):
    limiter.take(f"user-{n}@example.com")
print(built - before, resident_kib() - built)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_its_storage_is_resident_from_the_start_and_stays_so() -> None:
    """Written when built, not on first use: the process's RSS does not grow with addresses
    later (in a process of its own, whose heap has not been used and freed before)."""
    root = Path(__file__).parents[2]
    ran = subprocess.run(
        [sys.executable, "-c", _RESIDENT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    built_kib, then_kib = map(int, ran.stdout.split())

    reserved = RateLimitSettings(max_addresses=500_000).memory_bytes()  # 38 MiB
    assert built_kib * 1024 >= 0.95 * reserved
    assert then_kib < 1024  # 50,000 new addresses later: under 1 MiB more


def test_settings_whose_store_would_not_fit_are_refused() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, rate_limit={"per_email": 10_000})
    message = str(refused.value)
    assert "RATE_LIMIT__PER_EMAIL" in message
    assert "RATE_LIMIT__MAX_ADDRESSES" in message
    assert "7,633 MiB" in message  # (40 + 80,000) bytes x 100,000 addresses
    # the largest cap still fits at the default limit (800 MB)
    largest = load_settings(_env_file=None, rate_limit={"max_addresses": 10_000_000})
    assert largest.rate_limit.memory_bytes() == 800_000_000 <= MAX_MEMORY_BYTES
    # no in-memory store: nothing to reserve
    for without in (
        {"enabled": False},
        {"redis_url": "redis://redis.internal:6379/0", "on_redis_error": "closed"},
    ):
        settings = load_settings(_env_file=None, rate_limit={"per_email": 10_000, **without})
        assert settings.rate_limit.per_email == 10_000
    # with Redis failing open, requests fall back to an in-memory store: it must fit
    with pytest.raises(SettingsError):
        load_settings(
            _env_file=None,
            rate_limit={"per_email": 10_000, "redis_url": "redis://redis.internal:6379/0"},
        )
