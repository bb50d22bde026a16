"""The HTTP server's edge: uvicorn with h11, bounded in time, size and connections.

uvicorn's own options bound none of these (see `docs/benchmarks.md`, "The HTTP edge"), so
`python -m app` runs uvicorn with `EdgeProtocol`, its h11 protocol plus:

- **Head timeout** (`SERVER__HEADER_TIMEOUT_S`): from a connection's opening, or from its
  previous response, the request head must be complete in time. A head begun and not
  finished is answered `408 request_timeout`; a connection that sent nothing is closed.
  Trickled bytes do not extend it (uvicorn's keep-alive timer restarts on every byte).
- **Head size** (`SERVER__MAX_HEADER_BYTES`): h11 buffers at most this much of an incomplete
  head; beyond it the answer is `431 headers_too_large` (h11's hint, which uvicorn turns
  into a plain-text 400) and the connection is closed. The application never sees such a
  request; `app.http_limits.RequestLimits` bounds the size and the count of the heads it does.
- **Connections** (`SERVER__MAX_CONNECTIONS`, per process): a connection beyond the bound
  makes room by closing the oldest connection still waiting for its head (a slow or stalled
  client); when every connection is past its head, the new one is answered
  `503 overloaded` (`Retry-After: 1`) and closed. Either way the process never holds more
  descriptors than the bound allows.
- Malformed requests get a JSON `400 bad_request` instead of uvicorn's plain text.

`raise_nofile_limit` raises the soft descriptor limit (RLIMIT_NOFILE) at start-up, and
`connection_bound` keeps `SERVER__MAX_CONNECTIONS` well under it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
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
    max_connections: int = 1000


class EdgeConfig(uvicorn.Config):
    """uvicorn's configuration plus the edge's limits (picklable, for worker processes)."""

    def __init__(self, app: Any, *, limits: EdgeLimits, **options: Any) -> None:
        super().__init__(
            app,
            http=EdgeProtocol,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            **options,
        )
        self.limits = limits


class _Connection(h11.Connection):
    """h11's connection, remembering the status h11 suggests for the protocol error it raised."""

    error_status_hint = 400

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as error:
            self.error_status_hint = error.error_status_hint
            raise
        if isinstance(event, h11.Request) and event.target[:8].lower().startswith(
            (b"http://", b"https://")
        ):
            return _origin_form(event)
        return event


def _origin_form(request: h11.Request) -> h11.Request:
    """A request in absolute form (`GET http://host/path?q`), which RFC 9112 section 3.2.2
    says a server must accept, as the origin form (`/path?q`) that uvicorn routes; the Host
    header names the host. httptools did this; h11 hands the target over as it is."""
    parts = urlsplit(request.target.decode("ascii", "replace"))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return dataclasses.replace(request, target=target.encode("ascii", "replace"))


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a head timeout, a JSON 431/400 and a connection bound."""

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
        self.conn: _Connection = _Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes
        )
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
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
        if self.conn.their_state is h11.IDLE:
            self._head_bytes += len(data)
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head arrived whole: its request is under way
            self._stop_head_timer()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        # Unless a pipelined request has started already, the next head (and whatever is left
        # of this request's body, unread) must arrive in time too.
        if self.cycle is cycle and not self.transport.is_closing():
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        self._stop_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way: no second one on top of it
            return
        if self.conn.error_status_hint == 431:
            detail = f"the request head exceeds {self.limits.max_header_bytes} bytes"
            self._answer_and_close(error_bytes(431, "headers_too_large", detail))
        else:
            self._answer_and_close(error_bytes(400, "bad_request", "malformed HTTP request"))

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
        self._head_bytes = 0
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
        if self._head_bytes:  # a head was begun: say why it ends
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
        max_connections=connection_bound(settings, nofile),
    )
