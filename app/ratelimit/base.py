"""What every rate-limit store shares: the errors, the key of an address, the interface the
route calls, the metrics and a throttled warning."""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter

# How often at most a recurring warning (evictions, Redis unreachable) is logged.
WARN_EVERY_S = 60.0


class RateLimited(Exception):
    """The address had `limit` requests within the last `window_s` seconds."""

    def __init__(self, *, limit: int, window_s: int, retry_after_s: int) -> None:
        super().__init__(
            f"at most {limit} verification emails per address every {window_s} s; "
            f"retry in {retry_after_s} s"
        )
        self.limit = limit
        self.window_s = window_s
        self.retry_after_s = retry_after_s

    @classmethod
    def until(cls, *, limit: int, window_s: int, frees_in_s: float) -> RateLimited:
        """Refused until a slot frees in `frees_in_s` seconds (rounded up, at least 1 s)."""
        return cls(limit=limit, window_s=window_s, retry_after_s=max(1, math.ceil(frees_in_s)))


class RateLimitUnavailable(Exception):
    """The shared store (Redis) did not answer in time and `RATE_LIMIT__ON_REDIS_ERROR=closed`:
    the request cannot be checked, so it is refused. Nothing was sent."""

    def __init__(self) -> None:
        super().__init__("the rate limit cannot be checked right now; nothing was sent")


def normalise_address(email: str) -> str:
    """The key an address is counted under: one per inbox, as far as can be told.

    Case-insensitive as a whole (the domain is by definition; mail servers treat local parts
    the same way in practice), without a `+tag` sub-address (`ada+1@` and `ada+2@` reach one
    inbox), and with the domain in its ASCII (IDNA) form so both spellings count together.
    """
    local, _, domain = email.strip().rpartition("@")
    local = local.split("+", 1)[0] or local
    # Not IDNA-encodable (validated otherwise already): then it is counted as given.
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return f"{local.casefold()}@{domain.casefold()}"


class EmailRateLimiter(abc.ABC):
    """A per-address limit, as the route and the readiness probe use it."""

    @abc.abstractmethod
    async def acquire(self, email: str) -> None:
        """Take a slot for `email`, or raise (taking none) when it has none left.

        Raises:
            RateLimited: over the limit, with the whole seconds until a slot frees.
            RateLimitUnavailable: the store cannot be asked and the limiter fails closed.
        """

    # Where a shared store is (its URL without password); None: this process's memory.
    where: str | None = None

    async def ping(self) -> bool:
        """Whether the store answers (in time); memory always does."""
        return True

    async def not_ready(self) -> str | None:
        """Why requests cannot be served now (a readiness failure), or None."""
        return None

    async def aclose(self) -> None:
        """Release what the limiter holds (connections); it is not used afterwards."""
        return None


@dataclass(frozen=True)
class RateLimitMetrics:
    """The rate limit's series (see `app.ratelimit`), in prometheus-client's default registry."""

    evictions: Counter
    redis_errors: Counter


@functools.cache
def rate_limit_metrics() -> RateLimitMetrics:
    """Made once per process: every limiter of the process counts into the same series."""
    return RateLimitMetrics(
        evictions=Counter(
            "kafka_events_rate_limit_evictions",
            "Addresses the in-memory rate limiter forgot within their window because it "
            "tracked RATE_LIMIT__MAX_ADDRESSES (their count restarts).",
            registry=REGISTRY,
        ),
        redis_errors=Counter(
            "kafka_events_rate_limit_redis_errors",
            "Requests whose rate limit Redis did not answer in time, by RATE_LIMIT__ON_REDIS_ERROR "
            "(open: checked in this process's memory; closed: refused with 503).",
            ["mode"],
            registry=REGISTRY,
        ),
    )


class ThrottledWarning:
    """A warning about something that repeats, logged at most once every `WARN_EVERY_S`
    with how often it happened meanwhile (not once per request)."""

    def __init__(
        self, logger: logging.Logger, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._last = -math.inf
        self.pending = 0

    def __call__(self, message: str, *args: object) -> None:
        """Count one occurrence; log `message % (*args, occurrences)` if the last was long ago."""
        self.pending += 1
        now = self._clock()
        if now - self._last >= WARN_EVERY_S:
            self._logger.warning(message, *args, self.pending)
            self._last, self.pending = now, 0
