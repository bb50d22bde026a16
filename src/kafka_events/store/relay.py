"""The relay: publishes stored messages (failed or outbox) in the order they were stored.

Runs in the lifespan. It wakes when a message is recorded, or every `interval_ms`, and
publishes pending records oldest first through their policy's publisher (same event id,
the policy's deadline and retries). A failure stops the round, so records stay in order,
and the next round waits longer (exponential backoff with jitter, capped at
`backoff_max_ms`). A record that cannot ever be published (too large, rejected) or that
failed `max_attempts` rounds is marked abandoned: it stays in the store for an operator to
replay (`MessageStore.requeue`, e.g. from an admin route or CLI).

A record whose publish passed its deadline while a broker still had it (a 503 with
`delivery: unknown`, or a replay that timed out the same way) is *tracked*: the relay does not
send it again while that attempt is in flight, and marks it delivered if the attempt is
acknowledged late. Only when the attempt fails is it replayed.

One relay replays per store at a time: the one that holds the store's relay lease
(`kafka_events.store.lease`); the relays of other processes over the same store stand by, and one
takes over at its next round when the holder stops or dies. Records recorded by a standing-by
process wait for the holder's next round (`interval_ms`).

A record that Kafka acknowledged is never published again because the store could not be
told: when `mark_delivered` fails (the store is full, locked or gone), the acknowledgement is
kept in memory (`unmarked`) and the relay retries the *store write* at the start of each
round, not the publish. The records behind it go on being published; at most
`2 * batch_size` acknowledgements are held this way, after which the relay publishes nothing
more until the store takes them. `/health/ready` reports the store as failing meanwhile.

At least once: a crash after Kafka acknowledged a record but before the store marked it
delivered (including acknowledgements still held in memory) sends it again on restart (same
event id; consumers deduplicate).

The loop runs under a `Supervisor` (`kafka_events.supervision`): a round that raises is
logged and backed off; if the loop dies all the same it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka_events import context, errors
from kafka_events.config import ReplayConfig
from kafka_events.metrics import Metrics
from kafka_events.producer.publish import KafkaPublisher
from kafka_events.receipts import DeliveryReceipt
from kafka_events.store.base import Lease, MessageStore, Status, StoredMessage
from kafka_events.supervision import Supervisor, TaskState

logger = logging.getLogger(__name__)

STORE_TIMEOUT_S = 10.0


@dataclass(slots=True)
class RoundResult:
    delivered: int = 0
    failed: int = 0
    abandoned: int = 0


class Relay:
    """Publishes pending stored messages until stopped."""

    def __init__(
        self,
        store: MessageStore,
        publishers: Mapping[str, KafkaPublisher],
        settings: ReplayConfig,
        *,
        lease: Lease | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._lease = lease  # by default the store's, made at start()
        self._metrics = metrics or Metrics(None)
        self._replaying: bool | None = None  # holds the lease; None: not asked yet
        self._publishers = publishers
        self._settings = settings
        self._wake = asyncio.Event()
        self._supervisor = Supervisor(
            "the relay",
            self._run,
            backoff_max_ms=settings.backoff_max_ms,
            restarts_counter=self._metrics.task_restarts.labels("relay"),
        )
        self._backoff_s = 0.0
        # record id -> Kafka's receipt, for records the store could not mark delivered yet
        self._unmarked: dict[str, DeliveryReceipt] = {}
        self.store_failing = False  # the last store write failed
        # record id -> the late outcome of an attempt still in flight (see module doc)
        self._in_flight: dict[str, asyncio.Future[Any]] = {}
        self._late_updates: set[asyncio.Task[None]] = set()
        self.acknowledged_late = 0

    def wake(self) -> None:
        """Something was recorded: look now rather than at the next interval."""
        self._wake.set()

    def start(self) -> None:
        if self._lease is None:
            self._lease = self._store.lease()
        self._wake.set()  # a first round at once: records left from before a restart
        self._supervisor.start()

    @property
    def state(self) -> TaskState:
        """The supervised loop's: `running`, or `restarting` after it died."""
        return self._supervisor.state

    @property
    def unmarked(self) -> int:
        """Records Kafka acknowledged whose delivery the store has not taken yet."""
        return len(self._unmarked)

    def track(self, record_id: str, in_flight: asyncio.Future[Any]) -> None:
        """Hold `record_id` back while its earlier attempt is in flight; settle it after."""
        self._in_flight[record_id] = in_flight
        in_flight.add_done_callback(lambda done: self._settle(record_id, done))

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _settle(self, record_id: str, done: asyncio.Future[Any]) -> None:
        if self._in_flight.get(record_id) is not done:
            return
        if done.cancelled() or done.exception() is not None:
            del self._in_flight[record_id]
            self.wake()  # it failed after all: replay it
            return
        task = asyncio.create_task(self._mark_late_delivery(record_id, done.result()))
        self._late_updates.add(task)
        task.add_done_callback(self._late_updates.discard)

    async def _mark_late_delivery(self, record_id: str, receipt: DeliveryReceipt) -> None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self._store.mark_delivered(record_id, receipt)
            self.acknowledged_late += 1
            self._metrics.acknowledged_late.labels(receipt.policy).inc()
            logger.warning(
                "record %s was acknowledged after its deadline (%s[%s]@%s): not replayed",
                record_id,
                receipt.topic,
                receipt.partition,
                receipt.offset,
            )
        except (errors.StoreError, OSError, TimeoutError) as error:
            self._keep_unmarked(record_id, receipt, error)
        finally:
            self._in_flight.pop(record_id, None)

    async def stop(self) -> None:
        """Stop after the publish in hand (bounded by its policy's deadline)."""
        await self._supervisor.stop()
        await self.settle_late()
        if self._unmarked and not await self._mark_unmarked():
            logger.error(
                "%d records acknowledged by Kafka could not be marked delivered in the store: "
                "they are published again after a restart (same event ids)",
                len(self._unmarked),
            )
        if self._lease is not None:
            await self._lease.release()  # another process's relay may take over now
            if self._replaying:
                self._replaying = False
                self._metrics.relay_replaying.set(0)

    async def settle_late(self) -> None:
        """Wait for late deliveries being written to the store (each bounded).

        An attempt acknowledged just before this call has its done-callback scheduled, not yet
        run: one turn of the loop lets it start its store update, which is then waited for.
        """
        await asyncio.sleep(0)
        if self._late_updates:
            await asyncio.gather(*self._late_updates, return_exceptions=True)

    async def _run(self) -> None:
        interval_s = self._settings.interval_ms / 1000
        while True:
            timeout = max(self._backoff_s, interval_s) if self._backoff_s else interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if not await self._holds_lease():
                    continue  # another process's relay replays this store
                result = await self.run_round()
            except Exception:
                logger.exception("relay round failed")
                result = RoundResult(failed=1)
            if result.failed:
                self._backoff_s = min(
                    max(self._backoff_s * 2, interval_s) * random.uniform(0.8, 1.2),  # noqa: S311
                    self._settings.backoff_max_ms / 1000,
                )
            else:
                self._backoff_s = 0.0
                if result.delivered >= self._settings.batch_size:
                    self._wake.set()  # a full batch: more may be waiting

    async def _holds_lease(self) -> bool:
        assert self._lease is not None
        try:
            held = await self._lease.acquire()
        except BaseException:
            self._set_replaying(False)
            raise
        self._set_replaying(held)
        return held

    @property
    def replaying(self) -> bool:
        """Whether this relay holds the store's relay lease (and so replays)."""
        return bool(self._replaying)

    def _set_replaying(self, replaying: bool) -> None:
        if replaying != self._replaying:
            logger.info("relay: %s", "replaying (holds the lease)" if replaying else "standing by")
            self._replaying = replaying
            self._metrics.relay_replaying.set(1 if replaying else 0)

    def _keep_unmarked(self, record_id: str, receipt: DeliveryReceipt, error: Exception) -> None:
        """Kafka has the record, the store does not know yet: hold the receipt, not the record."""
        self._unmarked[record_id] = receipt
        self._metrics.relay_unmarked.set(len(self._unmarked))
        self.store_failing = True
        logger.warning(
            "record %s was acknowledged (%s[%s]@%s) but the store could not mark it delivered "
            "(%s): it is not published again; the store write is retried",
            record_id,
            receipt.topic,
            receipt.partition,
            receipt.offset,
            type(error).__name__,
        )

    async def _mark_unmarked(self) -> bool:
        """Tell the store of the acknowledgements it missed; False if it still fails."""
        for record_id, receipt in list(self._unmarked.items()):
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    await self._store.mark_delivered(record_id, receipt)
            except (errors.StoreError, OSError, TimeoutError) as error:
                logger.warning(
                    "the store still cannot mark %d acknowledged records delivered (%s)",
                    len(self._unmarked),
                    type(error).__name__,
                )
                return False
            del self._unmarked[record_id]
            self._metrics.relay_unmarked.set(len(self._unmarked))
        self.store_failing = False
        return True

    async def run_round(self) -> RoundResult:
        """Publish one batch of pending records, oldest first; stop at the first failure."""
        result = RoundResult()
        full = 2 * self._settings.batch_size  # hold no more in memory: wait for the store
        if self._unmarked and not await self._mark_unmarked() and len(self._unmarked) >= full:
            return RoundResult(failed=1)
        # past the records held back, so that they do not hold up the rest
        held_back = len(self._in_flight) + len(self._unmarked)
        for record in await self._store.list(
            status=Status.PENDING, limit=self._settings.batch_size + held_back
        ):
            if record.id in self._in_flight or record.id in self._unmarked:
                continue  # in flight: wait for its outcome; unmarked: Kafka has it
            with context.bound(
                event_id=record.event_id, correlation_id=context.correlation_id_in(record.headers)
            ):
                outcome = await self.publish_record(record)
            self._metrics.replayed.labels(record.topic, record.policy, outcome).inc()
            if outcome == "delivered":
                result.delivered += 1
            elif outcome == "abandoned":
                result.abandoned += 1
            else:
                result.failed += 1
                break
        if result.delivered or result.abandoned:
            logger.info(
                "relay: %d delivered, %d abandoned, %d pending",
                result.delivered,
                result.abandoned,
                await self._store.count(Status.PENDING),
            )
        return result

    async def publish_record(self, record: StoredMessage) -> str:
        """Publish one record; returns "delivered", "failed" or "abandoned"."""
        try:
            publisher = self._publishers[record.policy]
        except KeyError:
            await self._store.mark_failed(
                record.id,
                error_type="UnknownPolicy",
                error=f"no delivery policy '{record.policy}'",
                abandon=True,
            )
            return "abandoned"
        try:
            receipt = await publisher.publish(record.to_message())
        except errors.PublishError as error:
            hopeless = isinstance(
                error, (errors.RecordTooLarge, errors.PublishRejected, errors.EncodingError)
            )
            abandon = hopeless or record.replays + 1 >= self._settings.max_attempts
            await self._store.mark_failed(
                record.id, error_type=error.cause, error=str(error), abandon=abandon
            )
            if error.in_flight is not None and not abandon:
                self.track(record.id, error.in_flight)
            if abandon:
                logger.error(
                    "event %s (record %s) abandoned after %d replays: %s",
                    record.event_id,
                    record.id,
                    record.replays + 1,
                    error.cause,
                )
                return "abandoned"
            return "failed"
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self._store.mark_delivered(record.id, receipt)
        except (errors.StoreError, OSError, TimeoutError) as error:
            self._keep_unmarked(record.id, receipt, error)
        else:
            self.store_failing = False
        return "delivered"
