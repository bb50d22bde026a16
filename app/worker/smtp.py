"""aiosmtplib's SMTP client, with the DATA command in two steps and its own final deadline.

aiosmtplib writes `DATA`, the content and the final `.` under one timeout, and its errors do
not say how far it got. A failure before the final `.` delivered nothing and is safe to try
again; once the final `.` is written the server may have queued the message, and a lost
connection or a missing reply leaves the outcome *unknown*. So `data()` is replaced here:

1. `DATA` and its `354` reply, under the client's `timeout` like every other command;
2. the content, dot-stuffed, with the final `.` (`content_sent` is True from here on);
3. the reply to it, waited for `final_reply_timeout` seconds (RFC 5321 section 4.5.3.2.6:
   "DATA Termination: 10 minutes"); anything but `250` is an `SMTPDataError`.

Everything else (connection, TLS, AUTH, the envelope with SIZE, 8BITMIME and SMTPUTF8, refused
recipients, RSET after a refusal) stays aiosmtplib's: a subclass that replaces one method,
rather than a client of our own.
"""

from __future__ import annotations

from typing import Any, Literal

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.typing import Default, SMTPStatus


class PhasedSmtp(aiosmtplib.SMTP):
    """One connection to one server (`async with`), for one `send_message()`."""

    def __init__(self, *, final_reply_timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.final_reply_timeout = final_reply_timeout
        self.content_sent = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        # aiosmtplib's signature, which sendmail() calls with its per-command timeout
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109
    ) -> aiosmtplib.SMTPResponse:
        """Send DATA and the message; its final reply within `final_reply_timeout`.

        Raises:
            SMTPDataError: DATA or the message refused (a reply other than 354, then 250).
            SMTPServerDisconnected, SMTPReadTimeoutError: no reply; `content_sent` says
                whether the server may have the message.
        """
        start = await self.execute_command(b"DATA", timeout=timeout)
        if start.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        content = message.encode("ascii") if isinstance(message, str) else message
        content = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(content)) + b".\r\n"
        protocol = self.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(content)  # raises if the connection is already gone: nothing sent
            self.content_sent = True
            # no await between the write and read_response(), which arms the reply's waiter
            response = await protocol.read_response(timeout=self.final_reply_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()  # a late reply must not be read as the answer to a later command
            raise
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response
