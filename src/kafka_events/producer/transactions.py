"""Kafka transactions on a managed producer: all of a batch is committed, or none.

One transaction at a time per transactional producer (aiokafka's rule), under the producer's
`transaction_lock`. A fenced producer (a newer process took the transactional id) stops for
good; any other failure leaves the producer in doubt (an abort could wait on brokers without
end), so it is recycled: a fresh one with the same id fences it, and the coordinator aborts
what was left open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.errors import ProducerFenced  # type: ignore[import-untyped]

from kafka_events.messages import OutgoingMessage
from kafka_events.producer.lifecycle import ManagedProducer

Send = Callable[[Any, OutgoingMessage], Awaitable[asyncio.Future[Any]]]
Acknowledge = Callable[[asyncio.Future[Any], OutgoingMessage], Awaitable[Any]]


async def in_transaction(
    managed: ManagedProducer,
    producer: Any,
    messages: Sequence[OutgoingMessage],
    *,
    send: Send,
    acknowledge: Acknowledge,
) -> list[Any]:
    """Send `messages` in one transaction of `producer` and commit; their record metadata.

    Raises:
        KafkaError: the transaction failed (fenced: the producer is fenced for good; else
            it is recycled). Whatever was sent is aborted by the coordinator.
    """
    async with managed.transaction_lock:
        try:
            await producer.begin_transaction()
            futures = [await send(producer, m) for m in messages]
            metadata = [await acknowledge(f, m) for f, m in zip(futures, messages, strict=True)]
            await producer.commit_transaction()
        except ProducerFenced:
            managed.fence(producer)
            raise
        except BaseException:
            managed.recycle(producer)
            raise
        return metadata
