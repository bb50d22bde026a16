"""The verification-email worker: consumes `VERIFICATION__TOPIC` and sends each email once.

Lifecycle::

    NEW --start()--> RUNNING --stop()--> STOPPING --> STOPPED

One record at a time, in partition order; each record's offset is committed before the next
record is read (offsets are committed by hand, never automatically):

1. Its value is parsed. A poison record (no value, not JSON, not this event) goes to the
   dead-letter topic at once, with `dlq_attempts=0`.
2. An event id found in `handled_events` is a duplicate: nothing is sent.
3. The email is sent; a transient failure (SMTP down, timeout, 4xx) is retried with
   exponential backoff and jitter, at most `WORKER__MAX_ATTEMPTS` attempts in all; what still
   fails, or fails permanently (5xx), goes to the dead-letter topic.
4. After the email went out, the event id is recorded in `handled_events`.
5. If the record asked for a reply (`kafka_replyTopic`, `kafka_correlationId`), the reply is
   produced (`sent`, `failed` or `duplicate`).
6. The offset is committed.

Guarantees: at least once. A crash before step 4 sends the email again on restart; after it,
the duplicate is recognised. A dead letter is acknowledged by every in-sync replica (acks=all,
idempotent producer) before the commit; if Kafka or the database fails during a record, the
record is not committed: the worker seeks back to it and tries again after a capped backoff.

A reply is produced once, within `WORKER__PRODUCE_TIMEOUT_MS`; if that fails the reply is
logged as lost and the record is committed anyway: the requester's own timeout covers it,
and one unusable reply topic does not hold up every email behind it.

Every wait is bounded: each SMTP step (`SMTP__TIMEOUT_MS`), each produce
(`WORKER__PRODUCE_TIMEOUT_MS`), each commit and database step (`WORKER__COMMIT_TIMEOUT_MS`),
start-up (`WORKER__START_TIMEOUT_MS`) and shutdown (`WORKER__SHUTDOWN_TIMEOUT_MS` for the
record in hand, then the commit and produce deadlines to leave the group and flush).

`stop()` lets the record in hand finish (a backoff pause between attempts ends at once; that
record is then left uncommitted and handled again by the next owner), commits, leaves the
group (`consumer.stop()`) and closes the producer and the database.

With tracing on (`TRACING__ENABLED`), each record is handled in a CONSUMER span, a child of
the producer's span whose context the record carries; the email and the reply are its
children, and the reply carries the context on (`kafka_events.tracing`).

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import MessageError
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    IllegalStateError,
    KafkaError,
)
from sqlalchemy.exc import SQLAlchemyError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app import logs, metrics
from app.config import Settings
from app.telemetry import Tracing
from app.worker import messages
from app.worker.handled import HandledEvents
from app.worker.mailer import Mailer, SendError, build_email, make_mailer
from app.worker.messages import ReplyAddress, ReplyStatus, shorten
from kafka_events import access, options
from kafka_events import tracing as kafka_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long one poll waits for records before looking again (stop() interrupts it at once).
_POLL_MS = 1000


class WorkerState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class InfrastructureError(Exception):
    """Kafka or the database failed while a record was handled: it is handled again later."""


class _Stopping(Exception):
    """stop() was called during a pause between attempts: the record is left uncommitted."""


class _SendFailed(Exception):
    def __init__(self, error: SendError, attempts: int) -> None:
        super().__init__(error.detail)
        self.error = error
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record."""

    status: ReplyStatus
    event_id: str | None
    attempts: int
    error_type: str | None = None


class VerificationEmailWorker:
    """A consumer-group member that sends verification emails. `start()`, then `stop()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        mailer: Mailer | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self._settings = settings
        # `span_exporter` replaces the one TRACING__EXPORTER chooses (when tracing is on)
        self._tracing = Tracing(
            settings.tracing,
            service_name=f"{settings.tracing.service_name}-worker",
            exporter=span_exporter,
        )
        self._tracer: Tracer | None = None  # set by start() when tracing is on
        self._worker = settings.worker
        self._mailer = mailer or make_mailer(settings.smtp)
        self._handled = HandledEvents(settings.store.url)
        self._consumer: Any = None
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._state = WorkerState.NEW
        self._infrastructure_failures = 0
        self._lag_labels: set[Any] = set()  # partitions with a lag series

    @property
    def state(self) -> WorkerState:
        return self._state

    async def start(self) -> None:
        """Open the database, connect to Kafka and join the group, within START_TIMEOUT_MS.

        Raises:
            AccessRefused: Kafka refused the worker (credentials, TLS trust, ACLs).
            TimeoutError, KafkaError, SQLAlchemyError, OSError: it could not start; whatever
                was opened is closed again.
        """
        if self._state is not WorkerState.NEW:
            raise RuntimeError(f"a worker starts once (it is {self._state.value})")
        worker, kafka = self._worker, self._settings.kafka
        self._warn_if_poll_interval_too_short()
        client = options.client_options(kafka)
        try:
            self._tracing.start()
            self._tracer = self._tracing.tracer(__name__)
            async with asyncio.timeout(worker.start_timeout_ms / 1000):
                await self._handled.open()
                # tells a refusal from an outage, which aiokafka's start cannot
                await access.check(kafka, client_id=worker.client_id)
                self._producer = AIOKafkaProducer(
                    **client,
                    client_id=f"{worker.client_id}-producer",
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=worker.produce_timeout_ms,
                )
                await self._producer.start()
                self._consumer = AIOKafkaConsumer(
                    self._settings.verification.topic,
                    **client,
                    client_id=worker.client_id,
                    group_id=worker.group_id,
                    enable_auto_commit=False,
                    # a new group starts at the oldest record: no email asked for before the
                    # first deployment of the worker is skipped
                    auto_offset_reset="earliest",
                    # outbox and transactional policies write in transactions
                    isolation_level="read_committed",
                    max_poll_interval_ms=worker.max_poll_interval_ms,
                )
                await self._consumer.start()
        except BaseException as error:
            await self._close()
            self._state = WorkerState.STOPPED
            if isinstance(error, KafkaError) and (refused := access.refusal(error, kafka.security)):
                raise refused from None
            raise
        self._state = WorkerState.RUNNING
        self._task = asyncio.create_task(self._run(), name="verification-email-worker")
        self._task.add_done_callback(_log_failure)
        logger.info(
            "worker started: topic %s, group %s, dead letters to %s, mail via %s",
            self._settings.verification.topic,
            worker.group_id,
            worker.dead_letter_topic,
            self._settings.smtp.backend.value,
        )

    async def wait(self) -> None:
        """Until the worker's loop ends: after `stop()`, or on an unexpected error (raised)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Finish the record in hand, commit, leave the group, close everything; bounded."""
        if self._state in (WorkerState.STOPPING, WorkerState.STOPPED):
            return
        self._state = WorkerState.STOPPING
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self._worker.shutdown_timeout_ms / 1000)
            if not done:
                logger.warning(
                    "the record in hand did not finish within %d ms: left uncommitted",
                    self._worker.shutdown_timeout_ms,
                )
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()
        self._state = WorkerState.STOPPED
        logger.info("worker stopped")

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            # leaves the group, so its partitions move to another member at once
            await self._bounded_close(
                consumer.stop(), "the consumer", self._worker.commit_timeout_ms
            )
        if producer is not None:
            await self._bounded_close(
                producer.stop(), "the producer", self._worker.produce_timeout_ms
            )
        await self._bounded_close(
            self._handled.close(), "the database", self._worker.commit_timeout_ms
        )
        await self._tracing.stop()  # bounded by TRACING__EXPORT_TIMEOUT_MS

    @staticmethod
    async def _bounded_close(step: Awaitable[None], what: str, timeout_ms: int) -> None:
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await step
        except (TimeoutError, KafkaError, SQLAlchemyError, OSError) as error:
            logger.warning("closing %s failed: %r", what, error)

    def _warn_if_poll_interval_too_short(self) -> None:
        worker, smtp = self._worker, self._settings.smtp
        # a generous bound: each attempt's few SMTP steps, each pause at most BACKOFF_MAX_MS
        worst_ms = worker.max_attempts * (4 * smtp.timeout_ms + worker.backoff_max_ms)
        worst_ms += 2 * worker.produce_timeout_ms + 2 * worker.commit_timeout_ms
        if worst_ms >= worker.max_poll_interval_ms:
            logger.warning(
                "one record may take up to %d ms (MAX_ATTEMPTS x (SMTP steps + BACKOFF_MAX_MS)), "
                "more than WORKER__MAX_POLL_INTERVAL_MS=%d: the group may drop this worker "
                "mid-record (the record is then handled again, deduplicated)",
                worst_ms,
                worker.max_poll_interval_ms,
            )

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                records = await self._poll()
            except KafkaError as error:
                logger.warning("polling failed: %r", error)
                await self._pause_after_failure()
                continue
            for record in records:
                if self._stopping.is_set():
                    break
                headers = list(record.headers or ())
                with logs.bound(
                    event_id=messages.event_id_of(headers),
                    correlation_id=logs.correlation_id_in(headers),
                ):
                    if not await self._process(record):
                        break
            await self._measure_lag()

    async def _poll(self) -> list[Any]:
        """The next record(s), or none when stop() is called while waiting."""
        poll = asyncio.ensure_future(self._consumer.getmany(timeout_ms=_POLL_MS, max_records=1))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not poll.done():
                poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        if poll.cancelled():
            return []
        batches: dict[Any, list[Any]] = poll.result()
        return [record for batch in batches.values() for record in batch]

    async def _process(self, record: Any) -> bool:
        """Handle and commit one record; False if it must be read again (not committed)."""
        tp = TopicPartition(record.topic, record.partition)
        started = time.perf_counter()
        try:
            with kafka_tracing.processing(
                self._tracer, record, group=self._worker.group_id
            ) as span:
                outcome = await self._handle(record)
                _trace_outcome(span, outcome)
        except _Stopping:
            self._seek_back(tp, record.offset)
            return False
        except InfrastructureError as error:
            logger.warning(
                "event %s (%s[%d]@%d): %s; handled again after a pause",
                messages.event_id_of(list(record.headers or ())),
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            metrics.WORKER_RETRIES.labels(record.topic).inc()
            self._seek_back(tp, record.offset)
            await self._pause_after_failure()
            return False
        self._infrastructure_failures = 0
        metrics.WORKER_HANDLE_DURATION.labels(record.topic).observe(time.perf_counter() - started)
        await self._commit(tp, record.offset + 1, outcome)
        metrics.WORKER_RECORDS.labels(record.topic, outcome.status.value).inc()
        return True

    async def _measure_lag(self) -> None:
        """Set the lag of every assigned partition whose end is known (from its last fetch)."""
        assigned = self._consumer.assignment()
        for tp in self._lag_labels - assigned:  # moved to another worker
            with contextlib.suppress(KeyError):
                metrics.WORKER_LAG.remove(tp.topic, str(tp.partition))
        self._lag_labels &= assigned
        for tp in assigned:
            with contextlib.suppress(IllegalStateError, AssertionError, TimeoutError):
                end = self._consumer.highwater(tp)
                if end is None:
                    continue
                # known after the first fetch, so this does not wait on the broker
                async with asyncio.timeout(_POLL_MS / 1000):
                    position = await self._consumer.position(tp)
                metrics.WORKER_LAG.labels(tp.topic, str(tp.partition)).set(max(end - position, 0))
                self._lag_labels.add(tp)

    def _seek_back(self, tp: Any, offset: int) -> None:
        # no longer ours (IllegalStateError): its new owner reads it from the last commit
        with contextlib.suppress(IllegalStateError):
            self._consumer.seek(tp, offset)

    async def _pause_after_failure(self) -> None:
        self._infrastructure_failures += 1
        exponent = min(self._infrastructure_failures - 1, 20)
        delay_ms = min(self._worker.backoff_initial_ms * 2**exponent, self._worker.backoff_max_ms)
        delay_s = delay_ms / 1000 * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    async def _commit(self, tp: Any, offset: int, outcome: Outcome) -> None:
        try:
            async with asyncio.timeout(self._worker.commit_timeout_ms / 1000):
                await self._consumer.commit({tp: offset})
        except (CommitFailedError, IllegalStateError) as error:
            logger.warning(
                "event %s: not committed, the partition moved to another worker (%s); it "
                "may handle the record again (deduplicated)",
                outcome.event_id,
                type(error).__name__,
            )
        except (KafkaError, TimeoutError) as error:
            logger.warning(
                "event %s: commit of %s@%d failed (%r); a later commit covers it",
                outcome.event_id,
                tp,
                offset,
                error,
            )

    # --- one record ----------------------------------------------------------------------------

    async def _handle(self, record: Any) -> Outcome:
        headers: list[tuple[str, bytes]] = list(record.headers or ())
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            address = messages.reply_address(headers)
        except messages.InvalidReplyHeaders as error:
            logger.warning("%s: no reply: %s", where, error)
            address = None

        try:
            event = messages.parse_event(record.value)
        except messages.PoisonMessage as poison:
            event_id = messages.event_id_of(headers)
            logger.warning(
                "event %s (%s): poison, dead-lettering: %s: %s",
                event_id,
                where,
                poison.error_type,
                poison.detail,
            )
            await self._dead_letter(record, headers, poison.error_type, poison.detail, 0)
            outcome = Outcome(ReplyStatus.FAILED, event_id, 0, poison.error_type)
            await self._reply(address, outcome)
            return outcome

        event_id = event.event_id
        logs.event_id.set(event_id)  # the value's id, should the header lack it (reset by _run)
        if await self._database(self._handled.get(event_id)) is not None:
            logger.info("event %s (%s): already handled, not sent again", event_id, where)
            outcome = Outcome(ReplyStatus.DUPLICATE, event_id, 0)
            await self._reply(address, outcome)
            return outcome

        try:
            attempts = await self._send(event)
        except _SendFailed as failed:
            cause = failed.error
            logger.warning(
                "event %s (%s): not sent after %d attempt(s), dead-lettering: %s: %s",
                event_id,
                where,
                failed.attempts,
                cause.error_type,
                cause.detail,
            )
            await self._dead_letter(
                record, headers, cause.error_type, cause.detail, failed.attempts
            )
            outcome = Outcome(ReplyStatus.FAILED, event_id, failed.attempts, cause.error_type)
            await self._reply(address, outcome)
            return outcome

        await self._database(
            self._handled.record(
                event_id,
                status=ReplyStatus.SENT.value,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        )
        logger.info("event %s (%s): email sent (attempt %d)", event_id, where, attempts)
        outcome = Outcome(ReplyStatus.SENT, event_id, attempts)
        await self._reply(address, outcome)
        return outcome

    async def _send(self, event: messages.VerificationEmailEvent) -> int:
        """Send the event's email; returns the number of attempts it took.

        Raises:
            _SendFailed: a permanent failure, or MAX_ATTEMPTS transient ones.
            _Stopping: stop() was called during a pause between attempts.
        """
        worker = self._worker
        try:
            email = build_email(event, self._settings.smtp.sender)
        except (ValueError, MessageError) as error:  # an address the email package refuses
            failure = SendError(type(error).__name__, shorten(str(error)), transient=False)
            raise _SendFailed(failure, 0) from None

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            logger.warning(
                "event %s: attempt %d of %d failed (%s); next in %.1fs",
                event.event_id,
                state.attempt_number,
                worker.max_attempts,
                error.detail if isinstance(error, SendError) else repr(error),
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(worker.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=worker.backoff_initial_ms / 1000,
                max=worker.backoff_max_ms / 1000,
                jitter=worker.backoff_initial_ms / 1000,
            ),
            retry=retry_if_exception(lambda e: isinstance(e, SendError) and e.transient),
            sleep=self._sleep_unless_stopping,
            before_sleep=log_retry,
            reraise=True,
        )
        with kafka_tracing.step(self._tracer, "send email") as span:
            try:
                async for attempt in retrying:
                    with attempt:
                        try:
                            await self._mailer.send(email)
                        except SendError:
                            metrics.WORKER_EMAIL_ATTEMPTS.labels("failed").inc()
                            raise
                        metrics.WORKER_EMAIL_ATTEMPTS.labels("sent").inc()
            except SendError as error:
                attempts = int(retrying.statistics.get("attempt_number", 1))
                span.set_attribute(kafka_tracing.ATTEMPTS, attempts)
                kafka_tracing.failed(span, error.error_type)
                raise _SendFailed(error, attempts) from None
            attempts = int(retrying.statistics.get("attempt_number", 1))
            span.set_attribute(kafka_tracing.ATTEMPTS, attempts)
        return attempts

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        if self._stopping.is_set():
            raise _Stopping

    async def _database(self, step: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(self._worker.commit_timeout_ms / 1000):
                return await step
        except (SQLAlchemyError, OSError) as error:  # TimeoutError is an OSError
            raise InfrastructureError(f"database: {error!r}") from error

    async def _produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> None:
        """Produce one record and wait for every in-sync replica, within PRODUCE_TIMEOUT_MS.

        Raises:
            InfrastructureError: not acknowledged in time (it may still be written).
        """
        try:
            async with asyncio.timeout(self._worker.produce_timeout_ms / 1000):
                await self._producer.send_and_wait(
                    topic, value=value, key=key, headers=headers, partition=partition
                )
        except (KafkaError, TimeoutError) as error:
            raise InfrastructureError(f"producing to {topic}: {error!r}") from error

    async def _dead_letter(
        self,
        record: Any,
        headers: list[tuple[str, bytes]],
        error_type: str,
        error: str,
        attempts: int,
    ) -> None:
        await self._produce(
            self._worker.dead_letter_topic,
            key=record.key,
            value=record.value,
            headers=messages.dead_letter_headers(
                headers,
                error_type=error_type,
                error=error,
                attempts=attempts,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            ),
        )

    async def _reply(self, address: ReplyAddress | None, outcome: Outcome) -> None:
        if address is None:
            return
        value = messages.reply_value(
            event_id=outcome.event_id,
            status=outcome.status,
            detail=outcome.error_type,
            handled_at=datetime.now(UTC),
        )
        try:
            if address.partition is not None:
                async with asyncio.timeout(self._worker.produce_timeout_ms / 1000):
                    partitions = await self._producer.partitions_for(address.topic)
                if address.partition not in partitions:
                    # aiokafka would fail an assertion; a requester's mistake must not stop us
                    logger.warning(
                        "event %s: no reply: %s has no partition %d",
                        outcome.event_id,
                        address.topic,
                        address.partition,
                    )
                    return
            with kafka_tracing.producing(
                self._tracer, address.topic, message_id=outcome.event_id
            ) as span:
                headers = messages.reply_headers(
                    address, outcome.event_id, logs.correlation_id.get()
                )
                await self._produce(
                    address.topic,
                    key=address.correlation_id,
                    value=value,
                    headers=list(kafka_tracing.with_context(headers, span)),
                    partition=address.partition,
                )
        except (InfrastructureError, KafkaError, TimeoutError) as error:
            logger.error("event %s: reply to %s lost: %s", outcome.event_id, address.topic, error)


def _trace_outcome(span: Span, outcome: Outcome) -> None:
    span.set_attribute("verification_email.status", outcome.status.value)
    if outcome.error_type is not None:  # dead-lettered
        kafka_tracing.failed(span, outcome.error_type)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("the worker loop failed", exc_info=error)
