"""The verification email, and the two ways of sending it: SMTP (aiosmtplib) or the log.

Errors of a send (`SendError`)::

    SendError            the email was not accepted by the server
    ├ transient=True     connection refused or lost, a timeout, a 4xx answer: try again later
    └ transient=False    a 5xx answer (address refused, authentication failed): trying again
                         cannot help; the worker dead-letters the message at once

`SMTP__PASSWORD` is passed to aiosmtplib and nowhere else: it is in no log line and no error.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib

from app.config import SmtpBackend, SmtpSettings, SmtpTls
from app.worker.messages import VerificationEmailEvent, shorten

logger = logging.getLogger(__name__)

SUBJECT = "Verify your email address"


def build_email(event: VerificationEmailEvent, sender: str) -> EmailMessage:
    """The email of `event`: to its address, with the redirect link in a plain-text body.

    Its Message-ID is derived from the event id, so a resend after a crash (at least once)
    carries the same Message-ID, which mail systems can recognise as the same message.
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


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand `message` to the mail system.

        Raises:
            SendError: it was not accepted.
        """


class LogMailer:
    """Logs each email instead of sending it: local development without a mail server."""

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(("plain",))
        logger.info(
            "email (not sent, SMTP__BACKEND=log) to %s, subject %r:\n%s",
            message["To"],
            message["Subject"],
            body.get_content() if body is not None else "",
        )


class SmtpMailer:
    """Sends through one SMTP server; each send opens its own connection.

    Every network step (connect, TLS, each command) is bounded by `SMTP__TIMEOUT_MS`.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        settings = self._settings
        try:
            await aiosmtplib.send(
                message,
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
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            raise SendError(
                "SMTPRecipientsRefused",
                shorten(f"recipient refused: {', '.join(map(str, codes))}"),
                transient=any(400 <= code < 500 for code in codes),
            ) from None
        except aiosmtplib.SMTPResponseException as error:
            raise SendError(
                type(error).__name__,
                shorten(f"{error.code} {error.message}"),
                transient=400 <= error.code < 500,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            # connection refused or lost, timeouts, TLS not offered: the server may come back
            raise SendError(type(error).__name__, shorten(str(error)), transient=True) from None


def make_mailer(settings: SmtpSettings) -> Mailer:
    if settings.backend is SmtpBackend.LOG:
        return LogMailer()
    return SmtpMailer(settings)
