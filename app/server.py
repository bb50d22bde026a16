"""The HTTP server's edge: uvicorn with httptools, bounded in time, size and connections.

uvicorn's own options bound none of these (see `docs/benchmarks.md`, "The HTTP edge"), so
`python -m app` runs uvicorn with `EdgeProtocol`, its httptools protocol plus:

- **Head timeout** (`SERVER__HEADER_TIMEOUT_S`): from a connection's opening, or from its
  previous response, the request head must be complete in time. A head begun and not
  finished is answered `408 request_timeout`; a connection that sent nothing is closed.
  Trickled bytes do not extend it (uvicorn's keep-alive timer restarts on every byte).
- **Head size and fields** (`SERVER__MAX_HEADER_BYTES`, `SERVER__MAX_HEADER_COUNT`): a head
  whose target and fields exceed the size, or with more fields, is answered
  `431 headers_too_large` and the connection closed, before any route sees it. httptools
  holds a field's bytes until the field ends, so the bytes that arrive while a head is
  awaited are counted too: one endless field is cut off once it passes the size, give or
  take two reads of the socket (256 KiB each).
- **Connections** (`SERVER__MAX_CONNECTIONS`, per process): a connection beyond the bound
  makes room by closing the oldest connection still waiting for its head (a slow or stalled
  client); when every connection is past its head, the new one is answered
  `503 overloaded` (`Retry-After: 1`) and closed. Either way the process never holds more
  descriptors than the bound allows.
- Malformed requests get a JSON `400 bad_request` instead of uvicorn's plain text.

httptools (llhttp) routes absolute-form targets (`GET http://host/path`) by their path, as
RFC 9112 section 3.2.2 asks.

`raise_nofile_limit` raises the soft descriptor limit (RLIMIT_NOFILE) at start-up, and
`connection_bound` keeps `SERVER__MAX_CONNECTIONS` well under it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import ServerSettings
from app.http_limits import error_bytes

__all__ = [
    "DESCRIPTOR_RESERVE",
    "EdgeConfig",
    "EdgeLimits",
    "EdgeProtocol",
    "connection_bound",
    "raise_nofile_limit",
]

logger = logging.getLogger(__name__)

# Descriptors a process needs besides its client connections: Kafka connections (3 producers
# and a reply reader, to each broker), the store, logs, the listening socket, the metrics files.
DESCRIPTOR_RESERVE = 256
# How long a connection refused (503) or answered and closed (431, 400) may still send, its
# bytes discarded, before it is closed: closing with unread bytes would reset it before the
# client reads the answer.
REFUSED_LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16384
    max_header_count: int = 100
    max_connections: int = 1000


class EdgeConfig(uvicorn.Config):
    """uvicorn's configuration plus the edge's limits (picklable, for worker processes)."""

    def __init__(self, app: Any, *, limits: EdgeLimits, **options: Any) -> None:
        super().__init__(app, http=EdgeProtocol, **options)
        self.limits = limits


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a head the edge refuses."""


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head timeout and bounds, JSON 431/400 answers and a
    connection bound."""

    # Connections of this process still waiting for their head, oldest first.
    _waiting: ClassVar[OrderedDict[EdgeProtocol, None]] = OrderedDict()

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, EdgeConfig) else EdgeLimits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # from the last head (or the opening) to the next one's end
        self._head_bytes = 0  # bytes received while a head was awaited (a lower bound)
        self._field_bytes = 0  # the head's target and fields, as parsed
        self._head_begun = False  # a head's first byte came, its end not yet
        self._heads = 0  # heads parsed on this connection
        self._refusal: bytes | None = None  # the answer to a head refused while parsing
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            if self._waiting:
                oldest = next(iter(self._waiting))
                logger.warning("connection limit reached: closing the oldest head still awaited")
                oldest._close_for_timeout()
            else:
                self._refuse()
                return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        awaiting, heads = self._awaiting_head, self._heads
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                logger.warning("malformed HTTP request: answering 400")
            self.send_400_response("")
            return
        # httptools keeps a header field's bytes until the field ends: count the bytes that
        # arrive while a head is awaited (none of a chunk that ended a head), so that one
        # endless field is cut off too.
        if awaiting and self._awaiting_head and self._heads == heads:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head(self._too_large())
                self.send_400_response("")

    # -- the parser's callbacks, bounded -------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._field_bytes = 0
        self._head_begun = True

    def on_url(self, url: bytes) -> None:
        self._count_field(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_field(len(name) + len(value) + 4)
        if len(self.headers) >= self.limits.max_header_count:
            self._refuse_head(f"more than {self.limits.max_header_count} header fields")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._awaiting_head = self._head_begun = False
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True  # what follows is the next request's head
        self._head_bytes = self._field_bytes = 0

    def _count_field(self, size: int) -> None:
        self._field_bytes += size
        if self._field_bytes > self.limits.max_header_bytes:
            self._refuse_head(self._too_large())
            raise _HeadRefused

    def _too_large(self) -> str:
        return f"the request head exceeds {self.limits.max_header_bytes} bytes"

    def _refuse_head(self, detail: str) -> None:
        """Answer this head `431 headers_too_large` (`send_400_response` sends it)."""
        self._refusal = error_bytes(431, "headers_too_large", detail)

    # -- answers -------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        # Unless a pipelined request (its head whole) has started, the next head (and
        # whatever is left of this request's body, unread) must arrive in time too.
        if not pipelined and not self.transport.is_closing():
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        self._stop_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way: no second one on top of it
            return
        refusal = self._refusal or error_bytes(400, "bad_request", "malformed HTTP request")
        self._answer_and_close(refusal)

    def _answer_and_close(self, response: bytes) -> None:
        """Send `response`, then discard what the client still sends for a moment: closing
        with unread bytes would reset the connection before the client reads the answer."""
        self._refused = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_S, self.transport.close)

    # -- the head timer ------------------------------------------------------------------------

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._waiting[self] = None
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._close_for_timeout
        )

    def _stop_head_timer(self) -> None:
        self._waiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _close_for_timeout(self) -> None:
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        if self._head_begun:  # a head was begun: say why it ends
            detail = f"the request head did not arrive within {self.limits.header_timeout_s:g} s"
            self.transport.write(error_bytes(408, "request_timeout", detail))
        self.transport.close()

    # -- over the connection bound -------------------------------------------------------------

    def _refuse(self) -> None:
        logger.warning("connection limit reached: answering 503")
        detail = "the server has too many connections; retry shortly"
        self._answer_and_close(error_bytes(503, "overloaded", detail, (("retry-after", "1"),)))


def raise_nofile_limit(wanted: int | None) -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to `wanted` (None: to the hard limit); never lower it.

    Returns (soft before, soft now, hard), RLIM_INFINITY as `UNLIMITED_NOFILE`.
    """
    soft, hard = (_finite(n) for n in resource.getrlimit(resource.RLIMIT_NOFILE))
    target = min(hard if wanted is None else wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (target, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            )
        except (ValueError, OSError) as error:
            logger.warning("could not raise the descriptor limit to %d: %s", target, error)
    now = _finite(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return soft, now, hard


# An unlimited hard limit still meets the kernel's own (Linux's fs.nr_open defaults to this).
UNLIMITED_NOFILE = 1048576


def _finite(limit: int) -> int:
    return UNLIMITED_NOFILE if limit == resource.RLIM_INFINITY else limit


def connection_bound(settings: ServerSettings, nofile: int) -> int:
    """`SERVER__MAX_CONNECTIONS`, lowered (with a warning) to fit under `nofile` descriptors."""
    room = max(nofile - DESCRIPTOR_RESERVE, 1)
    if settings.max_connections <= room:
        return settings.max_connections
    logger.warning(
        "SERVER__MAX_CONNECTIONS=%d does not fit the descriptor limit %d (%d kept for Kafka, "
        "the store and logs): serving at most %d connections per process",
        settings.max_connections,
        nofile,
        DESCRIPTOR_RESERVE,
        room,
    )
    return room


def edge_limits(settings: ServerSettings, nofile: int) -> EdgeLimits:
    return EdgeLimits(
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        max_connections=connection_bound(settings, nofile),
    )
