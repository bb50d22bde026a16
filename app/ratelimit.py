"""Per-address rate limit of verification emails, so nobody can flood an inbox through us.

At most `RATE_LIMIT__PER_EMAIL` requests per address within any `RATE_LIMIT__WINDOW_S` seconds
(a moving window: a slot frees exactly `WINDOW_S` after the request that took it). An address
is forgotten once its last request leaves the window, so memory stays bounded by the traffic
of one window.

**Per process.** The counts live in the memory of each worker process: with N uvicorn workers
(or N replicas) one address may get up to N times the limit, and a restart forgets them. A
store shared by every process (e.g. Redis) is future work.

**What counts**: every request that passes validation and reaches the check, whatever happens
next. A `503` counts too: its message is recorded and the relay sends it later, so it still
reaches the inbox. A refused request (`429`) takes no slot. Invalid requests (`422`, `413`)
never reach the check.

Written here rather than with the `limits` library, whose moving window we used before: its
in-memory storage expires entries from a timer thread that, 10 ms after a request, scans every
address in the window (a lock, a bisection and a list copy each) while holding the GIL. That
costs CPU in proportion to the addresses in the window, not to the requests: with one address
per request (sign-ups) and the default one-hour window, 10,000 addresses cost ~9 ms of CPU per
request at 20 requests/s. Here a request costs a few dict and deque operations (~5 us), and an
address is dropped once, by the first request after its window passed (the addresses are kept
in the order of their last request, so no scan is needed): no thread. The limiter is used from
the event loop's thread only.

    RateLimited      an address is over its limit (the HTTP mapping is in app.exceptions)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from app.config import RateLimitSettings


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


class EmailRateLimiter:
    """Counts requests per normalised address in this process's memory."""

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = settings.per_email
        self._window_s = settings.window_s
        self._clock = clock
        # address key -> the times of its latest `limit` requests, oldest first. Ordered by
        # each address's latest request, so those whose window has passed come first.
        self._requests: OrderedDict[str, deque[float]] = OrderedDict()

    def acquire(self, email: str) -> None:
        """Take a slot for `email`, or raise `RateLimited` (taking none) when it has none left.

        Raises:
            RateLimited: with the whole seconds until the oldest slot in the window frees.
        """
        now = self._clock()
        window_start = now - self._window_s
        self._forget_before(window_start)
        # Hashed: bounded key size, and no addresses kept in memory in clear.
        key = hashlib.sha256(normalise_address(email).encode()).hexdigest()
        taken = self._requests.get(key)
        if taken is None:
            taken = self._requests[key] = deque(maxlen=self._limit)
        elif len(taken) == self._limit and taken[0] >= window_start:
            raise RateLimited(
                limit=self._limit,
                window_s=self._window_s,
                retry_after_s=max(1, math.ceil(taken[0] + self._window_s - now)),
            )
        else:
            self._requests.move_to_end(key)
        taken.append(now)  # a full deque drops its oldest, which has left the window

    def _forget_before(self, window_start: float) -> None:
        """Drop the addresses whose latest request is older than the window."""
        requests = self._requests
        while requests:
            key = next(iter(requests))
            if requests[key][-1] >= window_start:
                return
            del requests[key]
