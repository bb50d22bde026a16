"""The verification-email worker: consumes `VERIFICATION__TOPIC` and sends each email once.

The consumer group, the commits, the seek-back after a failure, the dead letters, the replies
and the lag are the library's consumer runner (`kafka_events.consumer`); this module is its
handler, for one record:

1. Its value is parsed. A poison record (no value, not JSON, not this event) goes to the
   dead-letter topic at once, with `dlq_attempts=0`.
2. An event id found in `handled_events` is not sent again: `duplicate`, or, if its outcome
   was recorded as unknown, `unknown` (dead-lettered again).
3. The email is sent (`app.worker.sending`): a transient failure before the final "." of
   DATA, or a 4xx answer, is retried within `WORKER__MAX_ATTEMPTS` attempts; what still fails,
   or fails permanently (5xx), goes to the dead-letter topic.
4. After the email went out, the event id is recorded in `handled_events` as `sent`.
5. If the final "." was sent and no reply came (connection lost, or nothing within
   `SMTP__FINAL_REPLY_TIMEOUT_MS`), the server may have queued the email: it is recorded as
   `unknown`, never sent again by the worker, logged at ERROR and dead-lettered with
   `dlq_error_type=smtp_outcome_unknown` for an operator to resolve. At most once, for this
   case: a second email is worse than none plus an alert (docs: "Delivery guarantees").

Then the runner replies, if the record asked for it (`sent`, `failed`, `duplicate` or
`unknown`), and commits. A crash between the server's 250 and step 4 sends the email again on
restart (at least once, with the same Message-ID); after it, the duplicate is recognised. If
Kafka or the database fails during a record, the record is not committed: the runner seeks
back to it and tries again after a capped backoff; an email already sent (or unknown) whose
record the database refused is remembered by this process and recorded, not sent, then.

Every wait is bounded: each SMTP step (`SMTP__TIMEOUT_MS`), the final reply
(`SMTP__FINAL_REPLY_TIMEOUT_MS`), each produce (`WORKER__PRODUCE_TIMEOUT_MS`), each commit and
database step (`WORKER__COMMIT_TIMEOUT_MS`), start-up (`WORKER__START_TIMEOUT_MS`) and shutdown
(`WORKER__SHUTDOWN_TIMEOUT_MS` for the record in hand, then the commit and produce deadlines
to leave the group and flush). A stop that cuts the wait for a final reply short records the
event as unknown first.

With tracing on (`TRACING__ENABLED`), each record is handled in a CONSUMER span, a child of
the producer's span whose context the record carries; the email and the reply are its
children, and the reply carries the context on (`kafka_events.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from app import metrics
from app.config import Settings
from app.telemetry import Tracing
from app.worker import messages
from app.worker.mailer import OUTCOME_UNKNOWN, Mailer, OutcomeUnknown, Progress, make_mailer
from app.worker.messages import ReplyStatus
from app.worker.sending import ATTEMPT_STEPS, EmailSender, SendFailed, attempt_window_ms
from kafka_events import context
from kafka_events.consumer import (
    ConsumerConfig,
    ConsumerRunner,
    HandledEvents,
    Outcome,
    RetryLater,
    RunnerState,
    Tools,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

WorkerState = RunnerState


# event ids sent (or unknown) whose record the database refused, until it takes them
_UNRECORDED_MAX = 1000


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
        dead_letter=status in (ReplyStatus.FAILED, ReplyStatus.UNKNOWN),
    )


def _unknown(event_id: str, attempts: int, detail: str) -> Outcome:
    # counted by the runner as kafka_events_worker_records_total{outcome="unknown"}
    return _outcome(
        ReplyStatus.UNKNOWN, event_id, attempts, error_type=OUTCOME_UNKNOWN, detail=detail
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
        self._sender = EmailSender(
            mailer or make_mailer(settings.smtp),
            settings.smtp,
            settings.worker,
            settings.smtp.sender,
        )
        self._unrecorded: dict[str, ReplyStatus] = {}
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
        if attempt_window_ms(smtp, worker) == 0:
            logger.warning(
                "one attempt may take up to %d ms (%d x SMTP__TIMEOUT_MS + "
                "SMTP__FINAL_REPLY_TIMEOUT_MS), too long for WORKER__MAX_POLL_INTERVAL_MS=%d "
                "once the dead letter, reply and commit are counted: each email gets one "
                "attempt, and a slow one may outlast the group's patience (the record is then "
                "handled by another member, which may send it again)",
                ATTEMPT_STEPS * smtp.timeout_ms + smtp.final_reply_timeout_ms,
                ATTEMPT_STEPS,
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
        if (known := self._unrecorded.get(event_id)) is not None:
            # sent (or unknown) by this process, then the database failed: record it, never resend
            await self._record(record, tools, event_id, known)
            logger.info("event %s (%s): %s earlier, recorded now", event_id, where, known.value)
            if known is ReplyStatus.UNKNOWN:
                return _unknown(event_id, 0, "outcome unknown earlier; not sent again")
            return _outcome(ReplyStatus.SENT, event_id)
        found = await tools.database(tools.handled.get(event_id))
        if found is not None:
            return self._known_outcome(event_id, found.status, where)

        progress = Progress()
        try:
            attempts = await self._sender.send(event, tools, progress)
        except SendFailed as failed:
            if isinstance(failed.error, OutcomeUnknown):
                await self._record(record, tools, event_id, ReplyStatus.UNKNOWN)
                logger.error(
                    "event %s (%s): outcome unknown after %d attempt(s), recorded as unknown, "
                    "not sent again, dead-lettering as %s: %s",
                    event_id,
                    where,
                    failed.attempts,
                    OUTCOME_UNKNOWN,
                    failed.error.detail,
                )
                return _unknown(event_id, failed.attempts, failed.error.detail)
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
        except asyncio.CancelledError:
            if progress.data_sent:  # stopped while waiting for the final reply
                await self._record_on_cancel(record, tools, event_id)
            raise

        await self._record(record, tools, event_id, ReplyStatus.SENT)
        logger.info("event %s (%s): email sent (attempt %d)", event_id, where, attempts)
        return _outcome(ReplyStatus.SENT, event_id, attempts)

    def _known_outcome(self, event_id: str, status: str, where: str) -> Outcome:
        """The outcome of an event handled before: a duplicate, or still unknown."""
        if status == ReplyStatus.UNKNOWN.value:
            # dead-lettered again: the first dead letter may not have been written
            logger.warning(
                "event %s (%s): its outcome is unknown (recorded), not sent again; "
                "dead-lettering as %s",
                event_id,
                where,
                OUTCOME_UNKNOWN,
            )
            return _unknown(event_id, 0, "recorded as unknown before; not sent again")
        logger.info("event %s (%s): already handled, not sent again", event_id, where)
        return _outcome(ReplyStatus.DUPLICATE, event_id)

    async def _record(self, record: Any, tools: Tools, event_id: str, status: ReplyStatus) -> None:
        """Record `event_id` as handled with `status`, or remember it until that works.

        Raises:
            RetryLater: the database failed; the record is handled again, and this process
                then records it without sending (a restart in between forgets it).
        """
        assert tools.handled is not None
        try:
            await tools.database(
                tools.handled.record(
                    event_id,
                    status=status.value,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
            )
        except RetryLater:
            self._unrecorded[event_id] = status
            while len(self._unrecorded) > _UNRECORDED_MAX:
                self._unrecorded.pop(next(iter(self._unrecorded)))
            raise
        self._unrecorded.pop(event_id, None)

    async def _record_on_cancel(self, record: Any, tools: Tools, event_id: str) -> None:
        # The task is being cancelled (stop() ran out of WORKER__SHUTDOWN_TIMEOUT_MS) after the
        # final dot: the record stays uncommitted, and without this its next reader would send
        # it again. One bounded database step, then the cancellation goes on.
        try:
            await self._record(record, tools, event_id, ReplyStatus.UNKNOWN)
        except RetryLater as error:
            logger.error(
                "event %s: stopped while waiting for the final SMTP reply, and it could not be "
                "recorded as unknown (%s): it may be sent again",
                event_id,
                error,
            )
            return
        logger.error(
            "event %s: stopped while waiting for the final SMTP reply: recorded as unknown, "
            "not sent again",
            event_id,
        )
