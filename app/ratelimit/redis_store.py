"""The shared store: a moving window per address in Redis, through `limits` (its async
`RedisStorage` on redis-py and its `MovingWindowRateLimiter`), so every process and replica
counts against one limit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.config import RateLimitFailure, RateLimitSettings, url_without_password
from app.ratelimit.base import (
    EmailRateLimiter,
    RateLimited,
    RateLimitUnavailable,
    ThrottledWarning,
    normalise_address,
    rate_limit_metrics,
)
from app.ratelimit.memory import MemoryRateLimiter

logger = logging.getLogger("app.ratelimit")

T = TypeVar("T")

# Keys are `<prefix>:LIMITER/<sha256 of the address>/<per_email>/<window_s>/second`.
KEY_PREFIX = "kafka-events:verification-email"
# After a failed call, requests skip Redis this long (each would wait for the timeout
# otherwise, holding a connection); the first request after it tries again.
RETRY_INTERVAL_S = 1.0
# The store's errors: redis-py's own, and the socket's (TimeoutError is an OSError).
_STORE_ERRORS = (RedisError, OSError)


class RedisRateLimiter(EmailRateLimiter):
    """Counts requests per normalised address in Redis, shared by every process using `url`.

    Every Redis call is bounded by `settings.redis_timeout_ms` (waiting for a pooled
    connection, connecting, each command), and redis-py's own retries are off: a call that
    fails is not repeated within the request. Then `settings.on_redis_error` decides: `open`
    checks the request in this process's memory instead (a `MemoryRateLimiter`), `closed`
    raises `RateLimitUnavailable`.

    Each address is a Redis list of its latest `per_email` request times (LPUSH, LTRIM, EXPIRE
    in one Lua script: one round trip, O(per_email)), expiring `window_s` after its latest
    request. The times are each process's wall clock: replicas must keep theirs in sync (NTP).
    """

    def __init__(self, settings: RateLimitSettings, url: str) -> None:
        self._item = RateLimitItemPerSecond(settings.per_email, settings.window_s)
        self._timeout_s = settings.redis_timeout_ms / 1000
        self._mode = settings.on_redis_error
        self.where = url_without_password(url)
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_max_connections,
            timeout=self._timeout_s,  # for a free connection of the pool
            socket_connect_timeout=self._timeout_s,
            socket_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),  # redis-py retries 3 times with backoff otherwise
        )
        storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=self._pool,  # type: ignore[arg-type]  # typed for scalars only
        )
        self._storage = storage
        self._client = Redis(connection_pool=self._pool)  # for PING, on the same connections
        self._limiter = MovingWindowRateLimiter(storage)
        self._local = MemoryRateLimiter(settings) if self._mode is RateLimitFailure.OPEN else None
        self._skip_until = 0.0
        self._failing = False
        self._last_error = ""
        self._errors = rate_limit_metrics().redis_errors.labels(mode=self._mode.value)
        self._warn_unreachable = ThrottledWarning(logger)

    async def acquire(self, email: str) -> None:
        key = hashlib.sha256(normalise_address(email).encode()).hexdigest()
        if time.monotonic() < self._skip_until:
            self._store_failed(None, email)
            return
        try:
            allowed = await self._bounded(lambda: self._limiter.hit(self._item, key))
            if not allowed:
                stats = await self._bounded(lambda: self._limiter.get_window_stats(self._item, key))
        except _STORE_ERRORS as error:
            self._skip_until = time.monotonic() + RETRY_INTERVAL_S
            self._store_failed(error, email)
            return
        self._answered()
        if not allowed:
            raise RateLimited.until(
                limit=self._item.amount,
                window_s=self._item.get_expiry(),
                frees_in_s=stats.reset_time - time.time(),
            )

    async def not_ready(self) -> str | None:
        """Failing closed, Redis not answering PING in time means no request can be served."""
        if self._mode is RateLimitFailure.CLOSED and not await self.ping():
            return "the rate limit's Redis does not answer (RATE_LIMIT__ON_REDIS_ERROR=closed)"
        return None

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers PING in time."""
        try:
            await self._bounded(self._ping)
        except _STORE_ERRORS:
            return False
        self._skip_until = 0.0  # answering again: the next request need not wait to try it
        return True

    async def _ping(self) -> None:
        pong = self._client.ping()
        assert not isinstance(pong, bool)  # typed for both clients; the asyncio one's awaits
        await pong

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        async with asyncio.timeout(self._timeout_s):
            return await call()

    def _store_failed(self, error: BaseException | None, email: str) -> None:
        """Redis did not answer (`error`), or was skipped after a recent failure (None)."""
        self._errors.inc()
        self._failing = True
        if error is not None:
            self._last_error = type(error).__name__
        self._warn_unreachable(
            "rate limit: Redis at %s did not answer within %d ms (%s); failing %s: %s "
            "(requests so affected since the last warning: %d)",
            self.where,
            round(self._timeout_s * 1000),
            self._last_error,
            self._mode.value,
            "requests are checked in this process's memory"
            if self._local is not None
            else "requests are refused with 503",
        )
        if self._local is None:
            raise RateLimitUnavailable
        self._local.take(email)

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("rate limit: Redis at %s answers again", self.where)
