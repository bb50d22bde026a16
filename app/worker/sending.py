"""One event's email, with its retries: what the worker's handler calls to send.

A transient failure (SMTP down, a timeout or a lost connection before the final "." of DATA,
a 4xx answer) is retried with exponential backoff and jitter, at most `WORKER__MAX_ATTEMPTS`
attempts in all. A permanent one (5xx) is not, and neither is an unknown outcome
(`OutcomeUnknown`: the final "." was sent and no reply came): sending again could deliver the
email twice.

**Every record ends within `WORKER__MAX_POLL_INTERVAL_MS`.** A consumer that takes longer is
dropped by its group, and the member that takes the record over sends the email again. So an
attempt starts only if it can end in time: one attempt takes at most about
`ATTEMPT_STEPS` x `SMTP__TIMEOUT_MS` + `SMTP__FINAL_REPLY_TIMEOUT_MS`, and the record's
dead letter or reply and commit about 2 x (`WORKER__PRODUCE_TIMEOUT_MS` +
`WORKER__COMMIT_TIMEOUT_MS`) after it. Attempts that would start later are not made: the record
is dead-lettered as failed after fewer attempts (logged).
"""

from __future__ import annotations

import logging
from email.errors import MessageError
from email.message import EmailMessage

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from app import metrics
from app.config import SmtpSettings, WorkerSettings
from app.worker import messages
from app.worker.mailer import Mailer, OutcomeUnknown, Progress, SendError, build_email
from app.worker.messages import shorten
from kafka_events import tracing as kafka_tracing
from kafka_events.consumer import Tools

logger = logging.getLogger(__name__)

# The steps of one attempt bounded by SMTP__TIMEOUT_MS in the estimate (connect and greeting,
# EHLO, MAIL and RCPT, DATA): an estimate, as the existing worst-case warning has always been.
ATTEMPT_STEPS = 4


class SendFailed(Exception):
    """The email was not sent (or its outcome is unknown) after `attempts` attempts."""

    def __init__(self, error: SendError, attempts: int) -> None:
        super().__init__(error.detail)
        self.error = error
        self.attempts = attempts


def attempt_window_ms(smtp: SmtpSettings, worker: WorkerSettings) -> int:
    """How long after a record's first attempt another may still start (0: none may)."""
    attempt_ms = ATTEMPT_STEPS * smtp.timeout_ms + smtp.final_reply_timeout_ms
    after_ms = 2 * (worker.produce_timeout_ms + worker.commit_timeout_ms)
    return max(worker.max_poll_interval_ms - after_ms - attempt_ms, 0)


class EmailSender:
    """Sends one event's email through `mailer`, retrying what may succeed later."""

    def __init__(
        self, mailer: Mailer, smtp: SmtpSettings, worker: WorkerSettings, sender: str
    ) -> None:
        self._mailer = mailer
        self._worker = worker
        self._sender = sender
        self._window_s = attempt_window_ms(smtp, worker) / 1000

    async def send(
        self, event: messages.VerificationEmailEvent, tools: Tools, progress: Progress
    ) -> int:
        """Send the event's email; returns the number of attempts it took.

        `progress.data_sent` tells, also when this is cancelled, whether the last attempt
        got as far as the final "." (the server may have the message).

        Raises:
            SendFailed: a permanent failure, an unknown outcome, or the last transient one.
            Stopping: stop() was called during a pause between attempts.
        """
        worker = self._worker
        try:
            email = build_email(event, self._sender)
        except (ValueError, MessageError) as error:  # an address the email package refuses
            failure = SendError(type(error).__name__, shorten(str(error)), transient=False)
            raise SendFailed(failure, 0) from None

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
            stop=stop_after_attempt(worker.max_attempts) | stop_before_delay(self._window_s),
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
                        progress.data_sent = False
                        await self._attempt(email, progress)
            except SendError as error:
                attempts = int(retrying.statistics.get("attempt_number", 1))
                span.set_attribute(kafka_tracing.ATTEMPTS, attempts)
                kafka_tracing.failed(span, error.error_type)
                if error.transient and attempts < worker.max_attempts:
                    logger.warning(
                        "event %s: no attempt after the %dth: it could not end within "
                        "WORKER__MAX_POLL_INTERVAL_MS=%d",
                        event.event_id,
                        attempts,
                        worker.max_poll_interval_ms,
                    )
                raise SendFailed(error, attempts) from None
            attempts = int(retrying.statistics.get("attempt_number", 1))
            span.set_attribute(kafka_tracing.ATTEMPTS, attempts)
        return attempts

    async def _attempt(self, email: EmailMessage, progress: Progress) -> None:
        try:
            await self._mailer.send(email, progress)
        except OutcomeUnknown:
            metrics.WORKER_EMAIL_ATTEMPTS.labels("unknown").inc()
            raise
        except SendError:
            progress.data_sent = False  # a reply came: the server did not take it
            metrics.WORKER_EMAIL_ATTEMPTS.labels("failed").inc()
            raise
        metrics.WORKER_EMAIL_ATTEMPTS.labels("sent").inc()
