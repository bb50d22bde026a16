"""Per-address rate limit of verification emails, so nobody can flood an inbox through us.

At most `RATE_LIMIT__PER_EMAIL` requests per address within any `RATE_LIMIT__WINDOW_S` seconds
(a moving window: a slot frees exactly `WINDOW_S` after the request that took it). Addresses
are counted per inbox (`normalise_address`) and kept only as hashes.

**Where the counts live** (`open_rate_limiter` chooses):

- *In memory* (default, `memory.MemoryRateLimiter`): in each process. With N uvicorn workers or
  N replicas one address may get up to N times the limit, and a restart forgets the counts.
  Memory is fixed: at most `RATE_LIMIT__MAX_ADDRESSES` addresses (default 100,000) in
  `(40 + 8 * PER_EMAIL)` bytes each, reserved when the limiter is built (7.6 MiB at the
  defaults; settings needing over 1 GiB are refused), so it does not grow with the addresses
  seen. An address
  is forgotten once its last request leaves the window. At the cap, the least recently seen
  address is forgotten early (its count restarts), with a warning at most once a minute and
  `kafka_events_rate_limit_evictions_total`. That can only make the limit laxer, and only for
  an address that `MAX_ADDRESSES` others have asked for since its latest request: the service
  keeps serving sign-ups through a flood of new addresses. Refusing new addresses at the cap
  instead would make the limiter a way to stop every sign-up for a whole window.
- *In Redis* (`RATE_LIMIT__REDIS_URL`, `redis_store.RedisRateLimiter`): one count shared by
  every process and replica, through the `limits` library (its moving window on its async
  `RedisStorage`, on redis-py). Every Redis call is bounded by `RATE_LIMIT__REDIS_TIMEOUT_MS`.
  When Redis does not answer in time, `RATE_LIMIT__ON_REDIS_ERROR` decides:
  - `open` (default): the request is checked in this process's memory instead, as without
    Redis (so the limit still holds per process), logged as a WARNING at most once a minute
    and counted in `kafka_events_rate_limit_redis_errors_total{mode="open"}`. A Redis outage
    then loosens the limit, but does not stop sign-ups; `/health/ready` ignores Redis.
  - `closed`: the request is refused with `503 rate_limit_unavailable` (and counted with
    `mode="closed"`), and `/health/ready` fails while Redis does not answer PING: for an
    operator who would rather stop sending than send over the limit.
  After a failed call, requests skip Redis for a second, so an unresponsive Redis costs one
  timeout per second, not one per request.

**What counts**: every request that passes validation and reaches the check, whatever happens
next. A `503` counts too: its message is recorded and the relay sends it later, so it still
reaches the inbox. A refused request (`429`) takes no slot. Invalid requests (`422`, `413`)
never reach the check.

The in-memory store is written here rather than with `limits`' in-memory storage, whose moving
window we used before: that storage expires entries from a timer thread that, 10 ms after a
request, scans every address in the window (a lock, a bisection and a list copy each) while
holding the GIL. That costs CPU in proportion to the addresses in the window, not to the
requests: with one address per request (sign-ups) and the default one-hour window, 10,000
addresses cost ~9 ms of CPU per request at 20 requests/s. Here a request costs a hash, a
lookup in a fixed-size table and a few array operations, and an address is dropped once, by
the first request after its window passed (the addresses are kept in the order of their last
request, so no scan is needed): no thread. The limiter is used from the event loop's thread
only. `limits`' Redis storage has no such thread: Redis expires its keys itself.

    RateLimited            an address is over its limit (429; the HTTP mapping is in
                           app.exceptions)
    RateLimitUnavailable   Redis did not answer and the limiter fails closed (503)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.config import RateLimitSettings
from app.ratelimit.base import (
    EmailRateLimiter,
    RateLimited,
    RateLimitUnavailable,
    normalise_address,
    rate_limit_metrics,
)
from app.ratelimit.memory import MemoryRateLimiter

__all__ = [
    "EmailRateLimiter",
    "MemoryRateLimiter",
    "RateLimitUnavailable",
    "RateLimited",
    "normalise_address",
    "open_rate_limiter",
    "rate_limit_metrics",
]

logger = logging.getLogger(__name__)


def rate_limiter(settings: RateLimitSettings) -> EmailRateLimiter | None:
    """The limiter `settings` describe (None when it is off); nothing connects yet."""
    if not settings.enabled:
        return None
    if settings.redis_url is None:
        return MemoryRateLimiter(settings)
    # imported only when used: redis-py and limits take a while to import
    from app.ratelimit.redis_store import RedisRateLimiter

    return RedisRateLimiter(settings, settings.redis_url)


@asynccontextmanager
async def open_rate_limiter(settings: RateLimitSettings) -> AsyncIterator[EmailRateLimiter | None]:
    """The limiter for a lifespan: closed (its connections released) when the block exits.

    With Redis, an unreachable Redis at start-up is logged, not fatal: requests are then
    handled as `RATE_LIMIT__ON_REDIS_ERROR` says until it answers.
    """
    limiter = rate_limiter(settings)
    if limiter is not None and (where := limiter.where) is not None:
        answered = await limiter.ping()
        logger.log(
            logging.INFO if answered else logging.WARNING,
            "rate limit: shared in Redis at %s (%s; on error: fail %s)",
            where,
            "reachable" if answered else "not answering yet",
            settings.on_redis_error.value,
        )
    try:
        yield limiter
    finally:
        if limiter is not None:
            await limiter.aclose()
