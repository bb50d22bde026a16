"""The consumer runner: a consumer-group member that hands each record to a handler, once.

Lifecycle::

    NEW --start()--> RUNNING --stop()--> STOPPING --> STOPPED

One record at a time, in partition order; each record's offset is committed before the next
record is read (offsets are committed by hand, never automatically):

1. The handler gets the record and a `Tools` (a stop-aware `sleep`, a bounded `database`
   step, the dedup table) and returns an `Outcome`: its status, and whether the record goes to
   the dead-letter topic (`dead_letter=True`, with the error's type and detail).
2. A dead letter is produced, acknowledged by every in-sync replica (acks=all, idempotent
   producer), before the commit.
3. If the record asked for a reply (`kafka_replyTopic`, `kafka_correlationId`), the reply is
   produced, once, within `produce_timeout_ms`; if that fails it is logged as lost and the
   record is committed anyway: the requester's own timeout covers it, and one unusable reply
   topic does not hold up every record behind it.
4. The offset is committed.

If Kafka or the database fails during a record (the handler raises `RetryLater`, or
producing the dead letter fails), the record is not committed: the runner seeks back to it
and tries again after a capped exponential backoff with jitter.

No record stops its partition (a poison record):

- one that cannot even be decoded (e.g. a header key that is not UTF-8) is skipped by offset
  (`kafka_events.consumer.fetching`), with a reference dead letter;
- one whose handler raises an unexpected error `max_handler_errors` times in a row is
  dead-lettered with the error's type (or, without a dead-letter topic, skipped);
- one whose dead letter is too large for Kafka gets a truncated or a reference copy
  (`kafka_events.consumer.answers`).

Each is logged at ERROR with its topic, partition and offset, and counted in
`kafka_events_worker_poison_total{topic,kind}`. The loop itself is supervised
(`kafka_events.supervision`): if it dies all the same, it is logged, rewound to the last
committed offsets and started again after a pause. `stop()` lets the record in
hand finish (a `Tools.sleep` between attempts ends at once: the record is then left
uncommitted and handled again by the next owner), commits, leaves the group and closes
everything. Every wait is bounded: start-up (`start_timeout_ms`), each produce, commit and
database step, and shutdown.

Guarantees: at least once; the handler deduplicates on the event id (`Tools.handled`).

While a record is handled, its `event_id` and `correlation_id` headers are bound for logging
(`kafka_events.context`), and with a tracer it is handled in a CONSUMER span, a child of the
producer's span whose context the record carries (`kafka_events.tracing`); the reply carries
the context on.

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    IllegalStateError,
    KafkaError,
)
from sqlalchemy.exc import SQLAlchemyError

from kafka_events import access, context, options
from kafka_events import tracing as kafka_tracing
from kafka_events.config import KafkaConfig
from kafka_events.consumer import fetching, records
from kafka_events.consumer.answers import Answers
from kafka_events.consumer.handled import HandledEvents
from kafka_events.consumer.handling import (
    ConsumerConfig,
    Handler,
    Outcome,
    RetryLater,
    RunnerState,
    Stopping,
    Tools,
)
from kafka_events.consumer.metrics import ConsumerMetrics
from kafka_events.supervision import Supervisor, TaskState

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

# How long one poll waits for records before looking again (stop() interrupts it at once).
_POLL_MS = 1000


class ConsumerRunner:
    """Reads `config.topic` as a member of `config.group_id` and hands each record to `handler`.

    `handled` (a `HandledEvents` table, opened and closed with the runner) is there for the
    handler to deduplicate on. `start()`, then `stop()`; `wait()` for the loop to end.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        config: ConsumerConfig,
        handler: Handler,
        *,
        handled: HandledEvents | None = None,
        metrics: ConsumerMetrics | None = None,
        tracer: Tracer | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        after_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._kafka = kafka
        self.config = config
        self._handler = handler
        self.handled = handled
        self._metrics = metrics or ConsumerMetrics(None)
        self.tracer = tracer
        self._before_start = before_start
        self._after_stop = after_stop
        self._consumer: Any = None
        self._producer: Any = None
        self._supervisor = Supervisor(
            f"the consumer loop of {config.topic}",
            self._run,
            backoff_initial_ms=config.backoff_initial_ms,
            backoff_max_ms=config.backoff_max_ms,
            restarts_counter=self._metrics.loop_restarts.labels(config.topic),
        )
        self._crashes = 0  # unexpected handler errors in a row, on the record in hand
        self.stopping = asyncio.Event()
        self._state = RunnerState.NEW
        self._failures = 0
        self._lag_labels: set[Any] = set()  # partitions with a lag series
        self._tools = Tools(config, self.stopping, handled, lambda: self.tracer)
        self._answers: Answers | None = None

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def loop_state(self) -> TaskState:
        """The supervised loop's: `running`, or `restarting` after it died."""
        return self._supervisor.state

    async def start(self) -> None:
        """Open the dedup table, connect to Kafka and join the group, within `start_timeout_ms`.

        Raises:
            AccessRefused: Kafka refused the consumer (credentials, TLS trust, ACLs).
            TimeoutError, KafkaError, SQLAlchemyError, OSError: it could not start; whatever
                was opened is closed again.
        """
        if self._state is not RunnerState.NEW:
            raise RuntimeError(f"a consumer runner starts once (it is {self._state.value})")
        config, kafka = self.config, self._kafka
        client = options.client_options(kafka)
        try:
            if self._before_start is not None:
                await self._before_start()
            async with asyncio.timeout(config.start_timeout_ms / 1000):
                if self.handled is not None:
                    await self.handled.open()
                # tells a refusal from an outage, which aiokafka's start cannot
                await access.check(kafka, client_id=config.client_id)
                self._producer = AIOKafkaProducer(
                    **client,
                    client_id=f"{config.client_id}-producer",
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=config.produce_timeout_ms,
                )
                await self._producer.start()
                self._answers = Answers(self._producer, config, lambda: self.tracer)
                self._consumer = AIOKafkaConsumer(
                    config.topic,
                    **client,
                    client_id=config.client_id,
                    group_id=config.group_id,
                    enable_auto_commit=False,
                    # a new group starts at the oldest record: nothing written before the
                    # first deployment of the consumer is skipped
                    auto_offset_reset="earliest",
                    # outbox and transactional policies write in transactions
                    isolation_level="read_committed",
                    max_poll_interval_ms=config.max_poll_interval_ms,
                )
                await self._consumer.start()
        except BaseException as error:
            await self._close()
            self._state = RunnerState.STOPPED
            if isinstance(error, KafkaError) and (refused := access.refusal(error, kafka.security)):
                raise refused from None
            raise
        self._state = RunnerState.RUNNING
        self._supervisor.start()

    async def wait(self) -> None:
        """Until the loop ends, after `stop()` (a loop that dies is started again)."""
        if (task := self._supervisor.task) is not None:
            await asyncio.shield(task)

    async def stop(self) -> None:
        """Finish the record in hand, commit, leave the group, close everything; bounded."""
        if self._state in (RunnerState.STOPPING, RunnerState.STOPPED):
            return
        self._state = RunnerState.STOPPING
        self.stopping.set()
        task = self._supervisor.task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self.config.shutdown_timeout_ms / 1000)
            if not done:
                logger.warning(
                    "the record in hand did not finish within %d ms: left uncommitted",
                    self.config.shutdown_timeout_ms,
                )
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._supervisor.stop()
        await self._close()
        self._state = RunnerState.STOPPED

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        config = self.config
        if consumer is not None:
            # leaves the group, so its partitions move to another member at once
            await _bounded(consumer.stop(), "the consumer", config.commit_timeout_ms)
        if producer is not None:
            await _bounded(producer.stop(), "the producer", config.produce_timeout_ms)
        if self.handled is not None:
            await _bounded(self.handled.close(), "the database", config.commit_timeout_ms)
        if self._after_stop is not None:
            await self._after_stop()

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        if self._supervisor.restarts:  # the loop died: the record in hand was not committed
            await self._rewind()
        while not self.stopping.is_set():
            try:
                fetched = await self._poll()
            except KafkaError as error:
                logger.warning("polling failed: %r", error)
                await self._pause_after_failure()
                continue
            if fetched.unreadable is not None:
                await self._skip(fetched.unreadable)
                continue
            for record in fetched.records:
                if self.stopping.is_set():
                    break
                headers = list(record.headers or ())
                with context.bound(
                    event_id=records.event_id_of(headers),
                    correlation_id=context.correlation_id_in(headers),
                ):
                    if not await self._process(record):
                        break
            await self._measure_lag()

    async def _rewind(self) -> None:
        """Back to the last committed offsets of the assigned partitions (bounded)."""
        async with asyncio.timeout(self.config.commit_timeout_ms / 1000):
            await self._consumer.seek_to_committed()

    async def _skip(self, skipped: fetching.Unreadable) -> None:
        """Leave a trace of a record that cannot be decoded, then commit past it."""
        topic = self.config.dead_letter_topic
        logger.error(
            "%s: the record cannot be decoded (%s): skipped unhandled; %s",
            skipped.where,
            skipped.error,
            f"a reference dead letter goes to {topic}" if topic else "no dead-letter topic",
        )
        tp = TopicPartition(skipped.topic, skipped.partition)
        if topic is not None:
            assert self._answers is not None
            try:
                await self._answers.unreadable(skipped)
            except RetryLater as error:
                logger.warning("%s: %s; skipped again after a pause", skipped.where, error)
                self._seek_back(tp, skipped.offset)
                await self._pause_after_failure()
                return
        self._metrics.poison.labels(skipped.topic, "unreadable").inc()
        await self._commit(tp, skipped.offset + 1, None)

    async def _poll(self) -> fetching.Fetched:
        """The next record(s), or none when stop() is called while waiting."""
        poll = asyncio.ensure_future(
            fetching.fetch(self._consumer, timeout_ms=_POLL_MS, max_records=1)
        )
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not poll.done():
                poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        if poll.cancelled():
            return fetching.Fetched([])
        return poll.result()

    async def _process(self, record: Any) -> bool:
        """Handle and commit one record; False if it must be read again (not committed)."""
        tp = TopicPartition(record.topic, record.partition)
        started = time.perf_counter()
        try:
            with kafka_tracing.processing(self.tracer, record, group=self.config.group_id) as span:
                outcome = await self._handle(record)
                if outcome.dead_letter and outcome.error_type is not None:
                    kafka_tracing.failed(span, outcome.error_type)
        except Stopping:
            self._seek_back(tp, record.offset)
            return False
        except RetryLater as error:
            logger.warning(
                "event %s (%s[%d]@%d): %s; handled again after a pause",
                records.event_id_of(list(record.headers or ())),
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            self._metrics.retries.labels(record.topic).inc()
            self._seek_back(tp, record.offset)
            await self._pause_after_failure()
            return False
        self._failures = 0
        self._crashes = 0
        self._metrics.handle_duration.labels(record.topic).observe(time.perf_counter() - started)
        await self._commit(tp, record.offset + 1, outcome)
        self._metrics.records.labels(record.topic, outcome.status).inc()
        return True

    async def _handle(self, record: Any) -> Outcome:
        headers: list[tuple[str, bytes]] = list(record.headers or ())
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            address = records.reply_address(headers)
        except records.InvalidReplyHeaders as error:
            logger.warning("%s: no reply: %s", where, error)
            address = None
        try:
            outcome = await self._handler(record, self._tools)
        except (Stopping, RetryLater):
            raise
        except Exception as error:  # noqa: BLE001 - a poison record must not stop the loop
            outcome = self._crashed(record, where, error)
        assert self._answers is not None
        if outcome.dead_letter:
            kind = await self._answers.dead_letter(record, headers, outcome)
            if kind != "copy":
                self._metrics.poison.labels(record.topic, f"dead_letter_{kind}").inc()
        await self._answers.reply(address, outcome)
        return outcome

    def _crashed(self, record: Any, where: str, error: Exception) -> Outcome:
        """The handler raised what it should not: try again, then give the record up.

        Raises:
            RetryLater: fewer than `max_handler_errors` errors in a row on this record.
        """
        self._crashes += 1
        limit = self.config.max_handler_errors
        if self._crashes < limit:
            logger.warning(
                "%s: the handler failed (%s), attempt %d of %d",
                where,
                type(error).__name__,
                self._crashes,
                limit,
                exc_info=error,
            )
            raise RetryLater(f"the handler failed: {type(error).__name__}") from error
        topic = self.config.dead_letter_topic
        logger.error(
            "%s: the handler failed %d times in a row (%s): %s",
            where,
            limit,
            type(error).__name__,
            f"dead-lettered to {topic}" if topic else "skipped (no dead-letter topic)",
            exc_info=error,
        )
        self._metrics.poison.labels(record.topic, "handler_error").inc()
        return Outcome(
            status="failed",
            event_id=records.event_id_of(list(record.headers or ())),
            attempts=self._crashes,
            error_type=type(error).__name__,
            detail=records.shorten(str(error)) or type(error).__name__,
            dead_letter=topic is not None,
        )

    async def _measure_lag(self) -> None:
        """Set the lag of every assigned partition whose end is known (from its last fetch)."""
        assigned = self._consumer.assignment()
        for tp in self._lag_labels - assigned:  # moved to another member
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(tp.topic, str(tp.partition))
        self._lag_labels &= assigned
        for tp in assigned:
            with contextlib.suppress(IllegalStateError, AssertionError, TimeoutError):
                end = self._consumer.highwater(tp)
                if end is None:
                    continue
                # known after the first fetch, so this does not wait on the broker
                async with asyncio.timeout(_POLL_MS / 1000):
                    position = await self._consumer.position(tp)
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(end - position, 0))
                self._lag_labels.add(tp)

    def _seek_back(self, tp: Any, offset: int) -> None:
        # no longer ours (IllegalStateError): its new owner reads it from the last commit
        with contextlib.suppress(IllegalStateError):
            self._consumer.seek(tp, offset)

    async def _pause_after_failure(self) -> None:
        self._failures += 1
        exponent = min(self._failures - 1, 20)
        delay_ms = min(self.config.backoff_initial_ms * 2**exponent, self.config.backoff_max_ms)
        delay_s = delay_ms / 1000 * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self.stopping.wait()

    async def _commit(self, tp: Any, offset: int, outcome: Outcome | None) -> None:
        try:
            async with asyncio.timeout(self.config.commit_timeout_ms / 1000):
                await self._consumer.commit({tp: offset})
        except (CommitFailedError, IllegalStateError) as error:
            logger.warning(
                "event %s: not committed, the partition moved to another member (%s); it "
                "may handle the record again (deduplicated)",
                outcome.event_id if outcome else None,
                type(error).__name__,
            )
        except (KafkaError, TimeoutError) as error:
            logger.warning(
                "event %s: commit of %s@%d failed (%r); a later commit covers it",
                outcome.event_id if outcome else None,
                tp,
                offset,
                error,
            )


async def _bounded(step: Awaitable[None], what: str, timeout_ms: int) -> None:
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            await step
    except (TimeoutError, KafkaError, SQLAlchemyError, OSError) as error:
        logger.warning("closing %s failed: %r", what, error)
