"""What a broker's acknowledgement becomes: the receipt, now or after the deadline.

`receipt()` turns aiokafka's record metadata into a `DeliveryReceipt` (unconfirmed, with no
invented offset, for acks=0). When a publish's deadline passes while the broker still has the
message, `late_receipt()` gives a future of its eventual receipt (or error), so that whoever
keeps the message can learn it was written after all; `late_outcome_logger()` logs that outcome.

`Any` from the untyped aiokafka stays in this package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from kafka_events.config import Policy
from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt, TimestampType

logger = logging.getLogger(__name__)

_TIMESTAMP_TYPES: dict[int, TimestampType] = {0: "CreateTime", 1: "LogAppendTime"}


def receipt(
    policy: Policy,
    name: str,
    message: OutgoingMessage,
    metadata: Any,
    elapsed_ms: float,
    attempts: int,
) -> DeliveryReceipt:
    """The receipt of `message`, acknowledged with `metadata` (None: acks=0, no answer)."""
    common: dict[str, Any] = {
        "event_id": message.event_id,
        "topic": message.topic,
        "acks": policy.acks.value,
        "idempotent": policy.enable_idempotence,
        "policy": name,
        "attempts": attempts,
        "elapsed_ms": round(elapsed_ms, 3),
        "deadline_ms": policy.delivery_timeout_ms,
    }
    if metadata is None:  # acks=0: the broker never answers
        return DeliveryReceipt(
            partition=None,
            offset=None,
            timestamp=None,
            timestamp_type=None,
            log_start_offset=None,
            confirmed=False,
            **common,
        )
    log_start = metadata.log_start_offset
    return DeliveryReceipt(
        partition=metadata.partition,
        offset=metadata.offset,
        timestamp=metadata.timestamp if metadata.timestamp >= 0 else None,
        timestamp_type=_TIMESTAMP_TYPES.get(metadata.timestamp_type),
        log_start_offset=log_start if log_start is not None and log_start >= 0 else None,
        confirmed=True,
        **common,
    )


def late_receipt(
    future: asyncio.Future[Any],
    make_receipt: Callable[[Any, float], DeliveryReceipt],
    started: float,
) -> asyncio.Future[DeliveryReceipt]:
    """A future of the receipt of a message acknowledged after its deadline (or its error).

    `make_receipt(metadata, elapsed_ms)` builds the receipt once aiokafka's `future` resolves.
    """
    late: asyncio.Future[DeliveryReceipt] = asyncio.get_running_loop().create_future()

    def resolve(done: asyncio.Future[Any]) -> None:
        if late.done():
            return
        if done.cancelled():
            late.cancel()
        elif done.exception() is not None:
            late.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            late.set_result(make_receipt(done.result(), (time.perf_counter() - started) * 1000))

    future.add_done_callback(resolve)
    late.add_done_callback(_consume_exception)
    return late


def late_outcome_logger(message: OutgoingMessage) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback that logs what became of `message` after its deadline."""

    def log_outcome(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            logger.warning(
                "event %s: failed after its deadline: %s", message.event_id, type(exc).__name__
            )
            return
        metadata = future.result()
        logger.warning(
            "event %s: acknowledged after its deadline at %s[%s]@%s",
            message.event_id,
            message.topic,
            getattr(metadata, "partition", "?"),
            getattr(metadata, "offset", "?"),
        )

    return log_outcome


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a late outcome's error as seen: nobody may be waiting for it (logged elsewhere)."""
    if not future.cancelled():
        future.exception()
