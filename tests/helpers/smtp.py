"""A real SMTP server for tests (aiosmtpd), with a handler whose answers a test controls.

The handler runs on the server's own thread and loop; a test reads its lists (appends are
atomic). A message counts as delivered ("queued") once it is in `messages`: the handler puts
it there as soon as the final dot has arrived, before it delays or drops its reply, as a
real server that queued the message and then lost its connection would.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.helpers.waiting import closed_port


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps what it accepts.

    - `refuse`: the answer to every RCPT (e.g. `"550 5.1.1 No such user"`), if set;
    - `data_delay_s`: a pause before the message is queued and answered;
    - `reply_delay_s`: a pause after the message is queued, before the `250`;
    - `drop_after_data`: queue the message, then close the connection without a reply;
    - `drop_at_rcpt`: close the connection at the first this many RCPTs (nothing sent yet);
    - `final_answers`: answers to the final dot, one per message, instead of queueing it
      (e.g. `["451 4.3.0 Try again later"]`); once used up, messages are queued.
    """

    refuse: str | None = None
    data_delay_s: float = 0.0
    reply_delay_s: float = 0.0
    drop_after_data: bool = False
    drop_at_rcpt: int = 0
    final_answers: list[str] = field(default_factory=list)
    messages: list[EmailMessage] = field(default_factory=list)
    recipients_seen: list[str] = field(default_factory=list)
    data_seen: int = 0  # messages whose final dot arrived, queued or not

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.recipients_seen.append(address)
        if len(self.recipients_seen) <= self.drop_at_rcpt:
            _drop(server)
            return "421 closing"  # written to a closed connection: never read
        if self.refuse is not None:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_seen += 1
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        if self.final_answers:
            return self.final_answers.pop(0)
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        if self.drop_after_data:
            _drop(server)
            return "250 never read"
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


def _drop(server: SMTP) -> None:
    transport: Any = server.transport
    if transport is not None:
        transport.abort()


@contextmanager
def smtp_server(inbox: Inbox, **smtp_options: Any) -> Iterator[int]:
    """An SMTP server on a free loopback port, delivering to `inbox`; yields its port."""
    port = closed_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
