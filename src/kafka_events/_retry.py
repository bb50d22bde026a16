"""kafkajs' retry schedule as a tenacity wait strategy.

kafkajs (`src/retry/index.js`) waits, before retry n (n = 1, 2, ...)::

    wait_1 = ceil(random(initial * (1 - factor), initial * (1 + factor)))
    wait_n = min(ceil(random(wait_{n-1} * (1 - factor), wait_{n-1} * (1 + factor))) * multiplier,
                 max_retry_time)

so `factor` is the randomisation (jitter) and `multiplier` the exponential growth, and
`max_retry_time` caps each wait (it is not a total budget). At most `retries` retries follow
the first attempt. Here the policy's `delivery_timeout_ms` is the total budget on top.

tenacity does the looping, stopping and error filtering; only this schedule is ours, because
tenacity's exponential waits have no "randomise the previous wait, then grow" form.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential_jitter
from tenacity.wait import wait_base

from kafka_events.config import Retry


class KafkajsWait(wait_base):
    """The wait before each retry, in seconds, following kafkajs exactly (see module doc)."""

    def __init__(self, settings: Retry, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def _randomised(self, retry_time_ms: float) -> int:
        delta = self.settings.factor * retry_time_ms
        return math.ceil(self._rng.uniform(retry_time_ms - delta, retry_time_ms + delta))

    def next_ms(self, previous_ms: float | None) -> float:
        """The wait after a wait of `previous_ms` (None before the first retry)."""
        if previous_ms is None:
            return self._randomised(self.settings.initial_retry_time_ms)
        grown = self._randomised(previous_ms) * self.settings.multiplier
        return min(grown, self.settings.max_retry_time_ms)

    def __call__(self, retry_state: RetryCallState) -> float:
        # tenacity keeps the previous wait in upcoming_sleep until this call replaces it.
        previous = retry_state.upcoming_sleep * 1000 if retry_state.attempt_number > 1 else None
        return self.next_ms(previous) / 1000


async def connect_until_stopped(
    connect: Callable[[], Awaitable[bool]], stopping: asyncio.Event, backoff_max_ms: int
) -> bool:
    """Call `connect` (each call bounded by its own timeout) until it returns True or
    `stopping` is set; between calls wait exponentially longer with jitter, capped at
    `backoff_max_ms`, and stop waiting at once when `stopping` is set.

    Returns:
        Whether `connect` succeeded (False: stopped first).
    """

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stopping.wait()

    retrying = AsyncRetrying(
        wait=wait_exponential_jitter(multiplier=0.2, max=backoff_max_ms / 1000),
        retry=retry_if_result(lambda connected: not connected),
        stop=lambda _: stopping.is_set(),
        sleep=pause,
        retry_error_callback=lambda _: False,
    )
    connected: bool = await retrying(connect)
    return connected
