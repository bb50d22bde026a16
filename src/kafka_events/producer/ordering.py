"""One publish per key at a time, so that our own retries never reorder a key's messages.

aiokafka keeps one batch per partition in flight and retries it before the next, so what it is
handed stays in order. But when a message fails and the publisher retries it (topic metadata
missing, a request timeout, NOT_ENOUGH_REPLICAS without idempotence), later messages of its key
handed over meanwhile would overtake it. A publish of a key waits for the previous publish of
that key to end, at the cost of one round trip per message for a busy key.
"""

from __future__ import annotations

import asyncio


class KeyOrder:
    """The queue of publishes per key (`Policy.ordered_per_key`); bounded by the publishes in
    flight: a key's entry goes when its last publish ends."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._enabled = enabled
        # key -> the future that ends the latest publish of that key
        self._tails: dict[bytes, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def join(
        self, key: bytes | None
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None] | None]:
        """(the previous publish of `key` to wait for, the future that ends this one)."""
        if key is None or not self._enabled:
            return None, None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous = self._tails.get(key)
        self._tails[key] = done
        return previous, done

    def leave(
        self,
        key: bytes | None,
        done: asyncio.Future[None] | None,
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Let the next publish of `key` go: at once, or, if this one gave up while still
        queued (its deadline), once the one before it ends, so nobody overtakes that."""
        if key is None or done is None:
            return

        def release(_: object = None) -> None:
            if not done.done():
                done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]

        if previous is not None and not previous.done():
            previous.add_done_callback(release)
        else:
            release()
