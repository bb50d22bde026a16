"""The request limits the application enforces itself, and the bytes of a JSON error.

`RequestLimits` (ASGI middleware, `SERVER__*`):

- a head with more than `max_header_count` fields, or more than `max_header_bytes` bytes of
  fields, is answered `431 headers_too_large` before any route sees it (the server refuses
  a head too large to buffer before it reaches the application: see `app.server`);
- the body must arrive within `body_timeout_s` of the request's start: a slower or stalled
  body is answered `408 request_timeout`, and the connection is closed.

`error_bytes` renders the same `{"error", "detail"}` body as a whole HTTP/1.1 response, for
the server's answers to requests the application never sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyTimeout", "RequestLimits", "error_body", "error_bytes"]


def error_body(kind: str, detail: str) -> bytes:
    return json.dumps({"error": kind, "detail": detail}).encode()


def error_bytes(
    status: int, kind: str, detail: str, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """A whole `Connection: close` HTTP/1.1 response with a JSON error body."""
    body = error_body(kind, detail)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class BodyTimeout(Exception):
    """The request body did not arrive in time (raised inside the application's `receive`)."""


class RequestLimits:
    """431 for too many or too large header fields, 408 for a body that does not arrive in time."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        max_header_count: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > self.max_header_count:
            detail = f"{len(headers)} header fields; at most {self.max_header_count}"
            await _answer(send, 431, "headers_too_large", detail)
            return
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            detail = f"{size} bytes of header fields; at most {self.max_header_bytes}"
            await _answer(send, 431, "headers_too_large", detail)
            return
        await self._bounded_body(scope, receive, send)

    async def _bounded_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        body_done = False
        timed_out = False
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:  # after the body only a disconnect can come: not bounded here
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if timed_out:  # whatever the app makes of the missing body, the answer is 408
                return
            response_started = True
            await send(message)

        with contextlib.suppress(BodyTimeout):
            await self.app(scope, timed_receive, guarded_send)
        if timed_out and not response_started:
            detail = f"the request body did not arrive within {self.body_timeout_s:g} s"
            await _answer(send, 408, "request_timeout", detail)


async def _answer(send: Send, status: int, kind: str, detail: str) -> None:
    body = error_body(kind, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
