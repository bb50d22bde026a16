"""The verification-email worker: consumes `VERIFICATION__TOPIC` and sends each email once.

The consumer group, the commits, the seek-back after a failure, the dead letters, the replies
and the lag are the library's consumer runner (`kafka_events.consumer`); this module is its
handler, for one record:

1. Its value is parsed. A poison record (no value, not JSON, not this event) goes to the
   dead-letter topic at once, with `dlq_attempts=0`.
2. An event id found in `handled_events` is a duplicate: nothing is sent.
3. The email is sent; a transient failure (SMTP down, timeout, 4xx) is retried with
   exponential backoff and jitter, at most `WORKER__MAX_ATTEMPTS` attempts in all; what still
   fails, or fails permanently (5xx), goes to the dead-letter topic.
4. After the email went out, the event id is recorded in `handled_events`.

Then the runner replies, if the record asked for it (`sent`, `failed` or `duplicate`), and
commits. Guarantees: at least once. A crash before step 4 sends the email again on restart;
after it, the duplicate is recognised. If Kafka or the database fails during a record, the
record is not committed: the runner seeks back to it and tries again after a capped backoff.

Every wait is bounded: each SMTP step (`SMTP__TIMEOUT_MS`), each produce
(`WORKER__PRODUCE_TIMEOUT_MS`), each commit and database step (`WORKER__COMMIT_TIMEOUT_MS`),
start-up (`WORKER__START_TIMEOUT_MS`) and shutdown (`WORKER__SHUTDOWN_TIMEOUT_MS` for the
record in hand, then the commit and produce deadlines to leave the group and flush).

With tracing on (`TRACING__ENABLED`), each record is handled in a CONSUMER span, a child of
the producer's span whose context the record carries; the email and the reply are its
children, and the reply carries the context on (`kafka_events.tracing`).
"""

from __future__ import annotations

import logging
from email.errors import MessageError
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app import metrics
from app.config import Settings
from app.telemetry import Tracing
from app.worker import messages
from app.worker.mailer import Mailer, SendError, build_email, make_mailer
from app.worker.messages import ReplyStatus, shorten
from kafka_events import context
from kafka_events import tracing as kafka_tracing
from kafka_events.consumer import (
    ConsumerConfig,
    ConsumerRunner,
    HandledEvents,
    Outcome,
    RunnerState,
    Tools,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

WorkerState = RunnerState


class _SendFailed(Exception):
    def __init__(self, error: SendError, attempts: int) -> None:
        super().__init__(error.detail)
        self.error = error
        self.attempts = attempts


def _outcome(
    status: ReplyStatus,
    event_id: str | None,
    attempts: int = 0,
    *,
    error_type: str | None = None,
    detail: str | None = None,
) -> Outcome:
    """The outcome of a record; a failure is dead-lettered."""
    span = trace.get_current_span()
    span.set_attribute("verification_email.status", status.value)
    return Outcome(
        status=status.value,
        event_id=event_id,
        attempts=attempts,
        error_type=error_type,
        detail=detail,
        dead_letter=status is ReplyStatus.FAILED,
    )


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
        self._worker = settings.worker
        self._mailer = mailer or make_mailer(settings.smtp)
        worker = settings.worker
        self._runner = ConsumerRunner(
            settings.kafka,
            # the WORKER__* settings the runner has, by the same names
            ConsumerConfig(
                topic=settings.verification.topic,
                **worker.model_dump(include=set(ConsumerConfig.model_fields) - {"topic"}),
            ),
            self.handle,
            handled=HandledEvents(settings.store.url),
            metrics=metrics.consumer_metrics(),
            before_start=self._start_tracing,
            after_stop=self._tracing.stop,  # bounded by TRACING__EXPORT_TIMEOUT_MS
        )

    @property
    def state(self) -> RunnerState:
        return self._runner.state

    async def start(self) -> None:
        """Open the database, connect to Kafka and join the group, within START_TIMEOUT_MS.

        Raises:
            AccessRefused: Kafka refused the worker (credentials, TLS trust, ACLs).
            TimeoutError, KafkaError, SQLAlchemyError, OSError: it could not start; whatever
                was opened is closed again.
        """
        self._warn_if_poll_interval_too_short()
        await self._runner.start()
        logger.info(
            "worker started: topic %s, group %s, dead letters to %s, mail via %s",
            self._settings.verification.topic,
            self._worker.group_id,
            self._worker.dead_letter_topic,
            self._settings.smtp.backend.value,
        )

    async def wait(self) -> None:
        """Until the worker's loop ends: after `stop()`, or on an unexpected error (raised)."""
        await self._runner.wait()

    async def stop(self) -> None:
        """Finish the record in hand, commit, leave the group, close everything; bounded."""
        if self.state in (RunnerState.STOPPING, RunnerState.STOPPED):
            return
        await self._runner.stop()
        logger.info("worker stopped")

    async def _start_tracing(self) -> None:
        self._tracing.start()
        self._runner.tracer = self._tracing.tracer(__name__)

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

    # --- one record (the runner's handler) -----------------------------------------------------

    async def handle(self, record: Any, tools: Tools) -> Outcome:
        headers: list[tuple[str, bytes]] = list(record.headers or ())
        where = f"{record.topic}[{record.partition}]@{record.offset}"
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
            return _outcome(
                ReplyStatus.FAILED, event_id, error_type=poison.error_type, detail=poison.detail
            )

        event_id = event.event_id
        context.event_id.set(event_id)  # the value's id, should the header lack it (reset after)
        assert tools.handled is not None
        if await tools.database(tools.handled.get(event_id)) is not None:
            logger.info("event %s (%s): already handled, not sent again", event_id, where)
            return _outcome(ReplyStatus.DUPLICATE, event_id)

        try:
            attempts = await self._send(event, tools)
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
            return _outcome(
                ReplyStatus.FAILED,
                event_id,
                failed.attempts,
                error_type=cause.error_type,
                detail=cause.detail,
            )

        await tools.database(
            tools.handled.record(
                event_id,
                status=ReplyStatus.SENT.value,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        )
        logger.info("event %s (%s): email sent (attempt %d)", event_id, where, attempts)
        return _outcome(ReplyStatus.SENT, event_id, attempts)

    async def _send(self, event: messages.VerificationEmailEvent, tools: Tools) -> int:
        """Send the event's email; returns the number of attempts it took.

        Raises:
            _SendFailed: a permanent failure, or MAX_ATTEMPTS transient ones.
            Stopping: stop() was called during a pause between attempts.
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
            sleep=tools.sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        with kafka_tracing.step(tools.tracer, "send email") as span:
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
