"""The in-memory store: a moving window per address in this process, at most
`RATE_LIMIT__MAX_ADDRESSES` addresses (see `app.ratelimit` for why it is written here)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from array import array
from collections.abc import Callable

from app.config import RateLimitSettings
from app.ratelimit.base import (
    EmailRateLimiter,
    RateLimited,
    ThrottledWarning,
    normalise_address,
    rate_limit_metrics,
)
from app.ratelimit.keytable import KEY_BYTES, KeyTable

logger = logging.getLogger("app.ratelimit")


class MemoryRateLimiter(EmailRateLimiter):
    """Counts requests per normalised address in this process's memory, for at most
    `settings.max_addresses` addresses, in storage of a fixed size allocated (and written, so
    it is resident) when the limiter is built: `settings.memory_bytes()`, whatever the
    addresses seen afterwards.

    An address is a 16-byte keyed hash (bounded size, no address in clear, and collisions
    cannot be aimed at without the process's random key) in a `KeyTable`, which keeps them in
    the order of their latest request. The times of each address's latest `per_email`
    requests are a ring of doubles at its slot: the clock's own values, compared as they are
    (no rounding, and no wrap-around however long the process runs).
    """

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = settings.per_email
        self._window_s = settings.window_s
        self._max_addresses = settings.max_addresses
        self._clock = clock
        self._hash_key = os.urandom(16)
        self._table = KeyTable(settings.max_addresses)
        # the times of each slot's latest `limit` requests: `_taken[slot]` of them, from
        # `limit * slot`, the oldest at `_first[slot]` (0 until `limit` are taken)
        self._times = array("d", [0.0]) * (self._limit * self._max_addresses)
        self._first = array("H", [0]) * self._max_addresses
        self._taken = array("H", [0]) * self._max_addresses
        self._evictions = rate_limit_metrics().evictions
        self._warn_evicted = ThrottledWarning(logger, clock=clock)

    @property
    def reserved_bytes(self) -> int:
        """The bytes of the limiter's storage, all allocated when it was built."""
        return (
            self._table.reserved_bytes
            + self._times.itemsize * len(self._times)
            + self._first.itemsize * (len(self._first) + len(self._taken))
        )

    def __len__(self) -> int:
        """The addresses tracked now (at most `max_addresses`)."""
        return len(self._table)

    async def acquire(self, email: str) -> None:
        self.take(email)

    def take(self, email: str) -> None:
        """`acquire`, synchronously: a hash, a lookup and a few array operations, no await.

        Raises:
            RateLimited: with the whole seconds until the oldest slot in the window frees.
        """
        now = self._clock()
        window_start = now - self._window_s
        self._forget_before(window_start)
        key = hashlib.blake2b(
            normalise_address(email).encode(), digest_size=KEY_BYTES, key=self._hash_key
        ).digest()
        table, limit = self._table, self._limit
        slot = table.find(key)
        if slot < 0:
            if len(table) >= self._max_addresses:
                self._evict_one()
            slot = table.insert(key)
            self._times[limit * slot] = now
            self._first[slot] = 0
            self._taken[slot] = 1
            return
        taken = self._taken[slot]
        if taken < limit:
            self._times[limit * slot + taken] = now
            self._taken[slot] = taken + 1
        else:
            first = self._first[slot]
            oldest = self._times[limit * slot + first]
            if oldest >= window_start:
                raise RateLimited.until(
                    limit=self._limit,
                    window_s=self._window_s,
                    frees_in_s=oldest + self._window_s - now,
                )
            # the oldest has left the window: the new request takes its place
            self._times[limit * slot + first] = now
            self._first[slot] = first + 1 if first + 1 < limit else 0
        table.touch(slot)

    def _forget_before(self, window_start: float) -> None:
        """Drop the addresses whose latest request is older than the window."""
        table, limit = self._table, self._limit
        while (slot := table.oldest) >= 0:
            latest = (self._first[slot] + self._taken[slot] - 1) % limit
            if self._times[limit * slot + latest] >= window_start:
                return
            table.pop_oldest()

    def _evict_one(self) -> None:
        """Forget the least recently seen address, still in its window: its count restarts."""
        self._table.pop_oldest()
        self._evictions.inc()
        self._warn_evicted(
            "rate limit: %d addresses tracked (RATE_LIMIT__MAX_ADDRESSES); the least recently "
            "seen are forgotten within their window, so their count restarts (addresses so "
            "forgotten since the last warning: %d). Raise it, or share the count in Redis "
            "(RATE_LIMIT__REDIS_URL)",
            self._max_addresses,
        )
