"""Per-address rate limit of verification emails, so nobody can flood an inbox through us.

At most `RATE_LIMIT__PER_EMAIL` requests per address within any `RATE_LIMIT__WINDOW_S` seconds
(a moving window: a slot frees exactly `WINDOW_S` after the request that took it). Built on
the `limits` library's moving-window strategy and in-memory storage, which drops an address's
entries once they leave the window, so memory stays bounded by the traffic of one window.

**Per process.** The counts live in the memory of each worker process: with N uvicorn workers
(or N replicas) one address may get up to N times the limit, and a restart forgets them. A
store shared by every process (e.g. `limits`' Redis storage) is future work.

**What counts**: every request that passes validation and reaches the check, whatever happens
next. A `503` counts too: its message is recorded and the relay sends it later, so it still
reaches the inbox. A refused request (`429`) takes no slot. Invalid requests (`422`, `413`)
never reach the check.

The synchronous storage is used on purpose: each call is a few list operations under a lock
that is never held across I/O, and it expires old entries on a short-lived timer thread,
whereas the asyncio storage of `limits` hops to a thread per address on every expiry scan.

    RateLimited      an address is over its limit (the HTTP mapping is in app.exceptions)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

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

    def __init__(self, settings: RateLimitSettings) -> None:
        self._item = RateLimitItemPerSecond(settings.per_email, settings.window_s)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def acquire(self, email: str) -> None:
        """Take a slot for `email`, or raise `RateLimited` (taking none) when it has none left.

        Raises:
            RateLimited: with the whole seconds until the oldest slot in the window frees.
        """
        # Hashed: bounded key size, and no addresses kept in memory in clear.
        key = hashlib.sha256(normalise_address(email).encode()).hexdigest()
        if self._limiter.hit(self._item, key):
            return
        reset_at, _ = self._limiter.get_window_stats(self._item, key)
        raise RateLimited(
            limit=self._item.amount,
            window_s=self._item.get_expiry(),
            retry_after_s=max(1, math.ceil(reset_at - time.time())),
        )
