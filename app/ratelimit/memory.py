"""The in-memory store: a moving window per address in this process, at most
`RATE_LIMIT__MAX_ADDRESSES` addresses (see `app.ratelimit` for why it is written here)."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable

from app.config import RateLimitSettings
from app.ratelimit.base import (
    EmailRateLimiter,
    RateLimited,
    ThrottledWarning,
    normalise_address,
    rate_limit_metrics,
)

logger = logging.getLogger("app.ratelimit")

_KEY_BYTES = 16  # 128 bits: no two of even billions of addresses share a key by chance
_DOUBLE = struct.Struct("d")


class MemoryRateLimiter(EmailRateLimiter):
    """Counts requests per normalised address in this process's memory, for at most
    `settings.max_addresses` addresses.

    Each address costs one `OrderedDict` entry: a 16-byte keyed hash of the address (bounded
    size, no address in clear, and collisions cannot be aimed at without the process's random
    key) and the times of its latest `per_email` requests packed as doubles in one `bytes`.
    About 200 bytes with one request (a deque of floats under a hex key took about 1 KB).
    """

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = settings.per_email
        self._window_s = settings.window_s
        self._max_addresses = settings.max_addresses
        self._clock = clock
        self._hash_key = os.urandom(16)
        # address key -> the times of its latest `limit` requests, oldest first, packed. Ordered
        # by each address's latest request: those whose window passed, or the least recently
        # seen at the cap, come first.
        self._requests: OrderedDict[bytes, bytes] = OrderedDict()
        self._evictions = rate_limit_metrics().evictions
        self._warn_evicted = ThrottledWarning(logger, clock=clock)

    def __len__(self) -> int:
        """The addresses tracked now (at most `max_addresses`)."""
        return len(self._requests)

    async def acquire(self, email: str) -> None:
        self.take(email)

    def take(self, email: str) -> None:
        """`acquire`, synchronously: a few dict and bytes operations, no await.

        Raises:
            RateLimited: with the whole seconds until the oldest slot in the window frees.
        """
        now = self._clock()
        window_start = now - self._window_s
        self._forget_before(window_start)
        key = hashlib.blake2b(
            normalise_address(email).encode(), digest_size=_KEY_BYTES, key=self._hash_key
        ).digest()
        packed = self._requests.get(key)
        if packed is None:
            if len(self._requests) >= self._max_addresses:
                self._evict_one()
            taken: list[float] = []
        else:
            taken = _unpack(packed)
            if len(taken) == self._limit and taken[0] >= window_start:
                raise RateLimited.until(
                    limit=self._limit,
                    window_s=self._window_s,
                    frees_in_s=taken[0] + self._window_s - now,
                )
            self._requests.move_to_end(key)
        taken.append(now)
        # the oldest drops once `limit` are newer: it has left the window (checked above)
        self._requests[key] = array("d", taken[-self._limit :]).tobytes()

    def _forget_before(self, window_start: float) -> None:
        """Drop the addresses whose latest request is older than the window."""
        requests = self._requests
        while requests:
            key, packed = next(iter(requests.items()))
            if _DOUBLE.unpack_from(packed, len(packed) - _DOUBLE.size)[0] >= window_start:
                return
            del requests[key]

    def _evict_one(self) -> None:
        """Forget the least recently seen address, still in its window: its count restarts."""
        self._requests.popitem(last=False)
        self._evictions.inc()
        self._warn_evicted(
            "rate limit: %d addresses tracked (RATE_LIMIT__MAX_ADDRESSES); the least recently "
            "seen are forgotten within their window, so their count restarts (addresses so "
            "forgotten since the last warning: %d). Raise it, or share the count in Redis "
            "(RATE_LIMIT__REDIS_URL)",
            self._max_addresses,
        )


def _unpack(packed: bytes) -> list[float]:
    times = array("d")
    times.frombytes(packed)
    return times.tolist()
