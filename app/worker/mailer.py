"""The verification email, and the two ways of sending it: SMTP (aiosmtplib) or the log.

Errors of a send (`SendError`)::

    SendError              the email was not accepted by the server
    ├ transient=True       before the final "." of DATA: connection refused or lost, a
    │                      timeout, a 4xx answer; or a 4xx answer to the final ".": nothing was
    │                      delivered, try again later
    ├ transient=False      a 5xx answer (address refused, authentication failed), before or
    │                      after DATA: trying again cannot help; the worker dead-letters it
    └ OutcomeUnknown       the final "." was sent, then the connection was lost or no reply
                           came within SMTP__FINAL_REPLY_TIMEOUT_MS: the server may have queued
                           the message. Never retried (transient=False): sending again could
                           deliver it twice

`SMTP__PASSWORD` is passed to aiosmtplib and nowhere else: it is in no log line and no error.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib

from app.config import SmtpBackend, SmtpSettings, SmtpTls
from app.worker.messages import VerificationEmailEvent, shorten
from app.worker.smtp import PhasedSmtp

logger = logging.getLogger(__name__)

# `dlq_error_type` of an email whose outcome is unknown (and the reply's `detail`)
OUTCOME_UNKNOWN = "smtp_outcome_unknown"

SUBJECT = "Verify your email address"


def build_email(event: VerificationEmailEvent, sender: str) -> EmailMessage:
    """The email of `event`: to its address, with the redirect link in a plain-text body.

    Its Message-ID is `<event id@sender's domain>`: every attempt, redelivery and replay of
    one event carries the same one, so a duplicate that still gets through (a crash between
    the server's 250 and the worker's record of it) can be recognised by the receiving side
    (RFC 5322 3.6.4: one Message-ID per message; mail systems and clients may drop repeats).
    """
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["From"] = sender
    # a plain string: `Address` refuses the non-ASCII local parts that EmailStr accepts
    # (aiosmtplib then sends with SMTPUTF8)
    message["To"] = event.email
    message["Subject"] = SUBJECT
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{event.event_id}@{domain}>"
    message.set_content(
        "Hello,\n\n"
        "please confirm your email address by opening this link:\n\n"
        f"{event.redirect_url}\n\n"
        "If you did not ask for this, ignore this email.\n"
    )
    return message


class SendError(Exception):
    """The email was not sent. `transient`: a later attempt may succeed."""

    def __init__(self, error_type: str, detail: str, *, transient: bool) -> None:
        super().__init__(detail)
        self.error_type = error_type
        self.detail = detail
        self.transient = transient


class OutcomeUnknown(SendError):
    """The message was sent to the server, which gave no final reply: it may be delivered."""

    def __init__(self, cause: str, detail: str) -> None:
        detail = shorten(f"{cause} after the final dot: {detail}")
        super().__init__(OUTCOME_UNKNOWN, detail, transient=False)
        self.cause = cause


@dataclass
class Progress:
    """How far one send got. `data_sent`: the server may have the message (set by the mailer).

    Read by the caller when the send ends without an answer, cancelled included: a
    cancellation after the final "." leaves the outcome unknown as well.
    """

    data_sent: bool = False


class Mailer(Protocol):
    async def send(self, message: EmailMessage, progress: Progress) -> None:
        """Hand `message` to the mail system, noting in `progress` how far it got.

        Raises:
            SendError: it was not accepted (`OutcomeUnknown`: it may have been).
        """


class LogMailer:
    """Logs each email instead of sending it: local development without a mail server."""

    async def send(self, message: EmailMessage, progress: Progress) -> None:
        body = message.get_body(("plain",))
        logger.info(
            "email (not sent, SMTP__BACKEND=log) to %s, subject %r:\n%s",
            message["To"],
            message["Subject"],
            body.get_content() if body is not None else "",
        )


class SmtpMailer:
    """Sends through one SMTP server; each send opens its own connection.

    Every network step (connect, TLS, each command) is bounded by `SMTP__TIMEOUT_MS`, the
    reply to the final "." of DATA by `SMTP__FINAL_REPLY_TIMEOUT_MS` (`app.worker.smtp`).
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage, progress: Progress) -> None:
        settings = self._settings
        client = PhasedSmtp(
            final_reply_timeout=settings.final_reply_timeout_ms / 1000,
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=(
                settings.password.get_secret_value() if settings.password is not None else None
            ),
            use_tls=settings.tls is SmtpTls.TLS,
            # required when asked for; never attempted otherwise (no silent downgrade)
            start_tls=settings.tls is SmtpTls.STARTTLS,
            timeout=settings.timeout_ms / 1000,
        )
        try:
            await self._send(client, message, progress)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            raise SendError(
                "SMTPRecipientsRefused",
                shorten(f"recipient refused: {', '.join(map(str, codes))}"),
                transient=any(400 <= code < 500 for code in codes),
            ) from None
        except aiosmtplib.SMTPResponseException as error:
            if client.content_sent and not 200 <= error.code < 600:
                # after the final dot, an answer that is no SMTP reply at all
                raise OutcomeUnknown(type(error).__name__, shorten(error.message)) from None
            # a reply, even to the final dot: 4xx and 5xx mean the server did not take it
            raise SendError(
                type(error).__name__,
                shorten(f"{error.code} {error.message}"),
                transient=400 <= error.code < 500,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            if client.content_sent:
                raise OutcomeUnknown(type(error).__name__, shorten(str(error))) from None
            # before the final dot: connection refused or lost, timeouts, TLS not offered;
            # nothing was delivered, and the server may come back
            raise SendError(type(error).__name__, shorten(str(error)), transient=True) from None

    @staticmethod
    async def _send(client: PhasedSmtp, message: EmailMessage, progress: Progress) -> None:
        # not `async with client`: on cancellation that would send QUIT, whose reply may be the
        # late reply to the final dot; here the connection is closed at once instead
        try:
            await client.connect()
            try:
                await client.send_message(message)
            finally:
                progress.data_sent = client.content_sent
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()  # the goodbye, after the 250: its failure changes nothing
        finally:
            client.close()


def make_mailer(settings: SmtpSettings) -> Mailer:
    if settings.backend is SmtpBackend.LOG:
        return LogMailer()
    return SmtpMailer(settings)
