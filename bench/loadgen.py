"""HTTP load generator: `POST /verification-emails` in a closed or an open loop, in a process
of its own; prints one JSON object on stdout.

    python -m bench.loadgen URL --requests N --concurrency C [--duration-s S]
                                [--warmup W | --warmup-s W]          # closed loop
    python -m bench.loadgen URL --requests N --rate R [--warmup-s W]
                                [--connections K]                    # open loop
      common: [--expect-status 202] [--timeout-s T] [--deadline-s D]
              [--server-pid PID] [--broker-pid PID] [--tag TAG] [--client raw|httpx]

The URL is used as given, query included (e.g. `.../verification-emails?wait_for=delivery`
with `--expect-status 200` for a request-reply peer). Only loopback targets are accepted.

Closed loop (`--concurrency C`): C workers, each with its own keep-alive connection, take the
next request number until N were sent, `--duration-s` seconds of measured time passed, or
`--deadline-s` passed; a worker sends its next request only when its previous one has been
answered, so a slow server slows the load down. Latency: from just before the request is
written to the end of its response. Warm-up: `--warmup` requests and/or `--warmup-s` seconds,
not measured, over the same connections.

Open loop (`--rate R`): request i is scheduled at t0 + i/R whatever happened to the earlier
ones; the first `--warmup-s` seconds (and `--warmup` requests) at that rate are not measured,
then N measured requests follow at the same rate. Its latency runs from its *scheduled* start
to the end of its response, so time spent waiting for the server (or for the load
generator's own timer, `schedule_lag_ms` in the output says how late it launched requests)
counts: a server that falls behind shows a growing tail instead of hiding it by slowing the
load (coordinated omission). Requests go over a pool of at most `--connections` keep-alive
connections (default 256, opened when first needed, so the warm-up opens them); a request
whose time has come but finds every connection busy waits for one, and that wait is part of
its latency. A request that has not got a connection `--timeout-s` after its scheduled
start is given up and counts as `no_connection`; one sent but not answered within
`--timeout-s` of being sent counts as `timeout` (its connection is closed and reopened for
the next request: a late answer must not be read as the next one's). Neither is in the
latency histogram, so look at both counts next to the percentiles. Scheduling stops at
`--deadline-s` after the start (the rest count in `not_sent`); the last requests then end
within twice `--timeout-s`. `offered_rps` is R; `achieved_rps` is the number of
answers with the expected status per second of the measured part (from the first measured
request's scheduled start to the end of the last measured request).

Both loops:
- The default client (`--client raw`) is a minimal HTTP/1.1 client on an asyncio protocol:
  it writes the request bytes and reads the status line, the headers and `Content-Length`
  bytes of body. It costs a few tens of microseconds of CPU per request, where httpx
  (`--client httpx`, one `AsyncClient` per connection) costs about 0.8 ms; on a 2-core
  machine shared with the broker and the server that difference is CPU taken from what is
  measured.
- Latencies of every answer, whatever its status, go into an HdrHistogram (microseconds,
  1 µs to 60 s, 3 significant digits): `latency` has p50/p90/p95/p99/p99.9/max/mean in ms,
  `histogram` its compressed base64 encoding, which `bench.stats.merge_histograms` pools
  across runs. Throughput: answers / wall time of the measured part.
- Outcomes: `accepted` answers had the expected status (`--expect-status`, default 202);
  `non_202` (kept under that name; `unexpected` is the same number) counts everything else
  that was sent: other statuses, `timeouts`, `errors` (transport) and `no_connection`.
- With `--server-pid`: the server's CPU time (utime+stime, all threads) during the measured
  part, its peak RSS during it (`VmHWM`, reset just before via `/proc/<pid>/clear_refs`) and
  its RSS right after it. With `--broker-pid`: the broker's CPU time during the same part.
- Each email is unique (`bench-<tag>-<n>@example.com`): one key per request, like sign-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import httpx
import uvloop

from bench import procfs
from bench.stats import (
    Histogram,
    encode_histogram,
    histogram_summary,
    new_histogram,
    record_seconds,
)

REDIRECT_URL = "https://app.example.com/verify"

# One worker's way to send one JSON body; returns the HTTP status.
Send = Callable[[bytes], Awaitable[int]]


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to send load to {host!r}: only loopback addresses")


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end]).decode("latin-1").lower()
        length = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                waiter.set_exception(ConnectionError("chunked responses are not supported"))
                self.close()
                return
        if length is None:
            waiter.set_exception(ConnectionError("response without content-length"))
            self.close()
            return
        total = head_end + 4 + length
        if len(self._buffer) < total:
            return
        del self._buffer[:total]
        waiter.set_result(int(head[9:12]))

    async def request(self, payload: bytes) -> int:
        if self._transport is None or self.closed:
            raise ConnectionError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(payload)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class RawClient:
    """`Send` functions over raw keep-alive connections (reconnecting when one is lost)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or ""
        self._port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._connections: list[_HttpConnection] = []

    async def _connect(self) -> _HttpConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_HttpConnection, self._host, self._port)
        self._connections.append(connection)
        return connection

    async def sender(self) -> Send:
        connection = await self._connect()

        async def send(body: bytes) -> int:
            nonlocal connection
            if connection.closed:
                connection = await self._connect()
            payload = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
            try:
                return await connection.request(payload)
            except BaseException:
                connection.close()  # a half-read response must not leak into the next one
                raise

        return send

    async def aclose(self) -> None:
        for connection in self._connections:
            connection.close()


class HttpxClient:
    """`Send` functions over httpx, one `AsyncClient` per connection (a shared pool is far
    slower at high concurrency)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._clients: list[httpx.AsyncClient] = []

    async def sender(self) -> Send:
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=self._timeout_s)
        self._clients.append(client)

        async def send(body: bytes) -> int:
            response = await client.post(
                self._url, content=body, headers={"content-type": "application/json"}
            )
            return response.status_code

        return send

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


class Client(Protocol):
    async def sender(self) -> Send: ...

    async def aclose(self) -> None: ...


def _body(tag: str, number: int) -> bytes:
    return json.dumps(
        {"email": f"bench-{tag}-{number}@example.com", "redirect_url": REDIRECT_URL}
    ).encode()


@dataclass
class Tally:
    """Latencies of the answers and the outcome of every request of one part of a run."""

    histogram: Histogram = field(default_factory=new_histogram)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    last_end: float = 0.0  # perf_counter() when the last request of this part ended

    def answered(self, status: int, latency_s: float, now: float) -> None:
        record_seconds(self.histogram, latency_s)
        self.outcomes[str(status)] += 1
        self.last_end = max(self.last_end, now)

    def failed(self, outcome: str, now: float) -> None:
        self.outcomes[outcome] += 1
        self.last_end = max(self.last_end, now)


async def _closed_loop(
    senders: list[Send],
    *,
    count: int,
    duration_s: float,
    deadline_s: float,
    timeout_s: float,
    tag: str,
) -> tuple[Tally, float]:
    """Send up to `count` requests over the workers' senders for at most `duration_s`;
    the tally and the wall time."""
    tally = Tally()
    next_number = 0
    started = time.perf_counter()
    stop_at = started + min(duration_s, deadline_s)

    async def worker(send: Send) -> None:
        nonlocal next_number
        while next_number < count and time.perf_counter() < stop_at:
            number = next_number
            next_number += 1
            body = _body(tag, number)
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    status = await send(body)
            except TimeoutError:
                tally.failed("timeout", time.perf_counter())
                continue
            except (OSError, httpx.HTTPError) as exc:
                tally.failed(type(exc).__name__, time.perf_counter())
                continue
            now = time.perf_counter()
            tally.answered(status, now - sent, now)

    await asyncio.gather(*(worker(send) for send in senders))
    return tally, time.perf_counter() - started


class _Pool:
    """At most `size` keep-alive connections, each opened when first needed; a request that
    finds none free waits for the next one released (first come, first served)."""

    def __init__(self, client: Client, size: int) -> None:
        self._client = client
        self._size = size
        self._idle: list[Send] = []
        self._waiters: collections.deque[asyncio.Future[Send]] = collections.deque()
        self.opened = 0
        self.peak_waiting = 0

    async def acquire(self) -> Send:
        if self._idle:
            return self._idle.pop()
        if self.opened < self._size:
            self.opened += 1
            try:
                return await self._client.sender()
            except BaseException:
                self.opened -= 1
                raise
        waiter: asyncio.Future[Send] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.peak_waiting = max(self.peak_waiting, len(self._waiters))
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as this one gave up
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, send: Send) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(send)
                return
        self._idle.append(send)


@dataclass
class OpenLoopResult:
    warmup: Tally
    measured: Tally
    lag: Histogram  # how late the measured requests were launched after their schedule
    measured_start: float | None  # perf_counter() of the first measured scheduled start
    scheduled: int  # measured requests scheduled before the deadline


async def _open_loop(
    pool: _Pool,
    *,
    rate: float,
    warmup_count: int,
    count: int,
    deadline_s: float,
    timeout_s: float,
    tag: str,
    on_measured_start: Callable[[], None],
) -> OpenLoopResult:
    """Request i at t0 + i/rate (the first `warmup_count` not measured), each over a pooled
    connection, its latency from its scheduled start; stops scheduling at the deadline."""
    warm, measured, lag = Tally(), Tally(), new_histogram()
    tasks: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    total = warmup_count + count
    measured_start: float | None = None

    async def one(body: bytes, scheduled: float, tally: Tally) -> None:
        try:
            async with asyncio.timeout(max(0.0, scheduled + timeout_s - time.perf_counter())):
                send = await pool.acquire()
        except TimeoutError:
            tally.failed("no_connection", time.perf_counter())
            return
        except (OSError, httpx.HTTPError) as exc:  # opening a connection failed
            tally.failed(type(exc).__name__, time.perf_counter())
            return
        try:
            async with asyncio.timeout(timeout_s):
                status = await send(body)
        except TimeoutError:
            tally.failed("timeout", time.perf_counter())
            return
        except (OSError, httpx.HTTPError) as exc:
            tally.failed(type(exc).__name__, time.perf_counter())
            return
        finally:
            pool.release(send)
        now = time.perf_counter()
        tally.answered(status, now - scheduled, now)

    t0 = time.perf_counter()
    stop_at = t0 + deadline_s
    number = 0
    while number < total:
        scheduled = t0 + number * interval
        if scheduled >= stop_at:
            break
        now = time.perf_counter()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
            now = time.perf_counter()
        # Launch every request whose time has come (the timer fires late, by up to ~1 ms).
        while number < total and scheduled <= now and scheduled < stop_at:
            if number < warmup_count:
                tally, body = warm, _body(f"{tag}-warmup", number)
            else:
                if number == warmup_count:
                    on_measured_start()
                    measured_start = scheduled
                tally, body = measured, _body(tag, number - warmup_count)
                record_seconds(lag, now - scheduled)
            task = asyncio.create_task(one(body, scheduled, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            number += 1
            scheduled = t0 + number * interval
    if tasks:
        await asyncio.wait(tasks)  # each is bounded by its own timeout
    return OpenLoopResult(
        warmup=warm,
        measured=measured,
        lag=lag,
        measured_start=measured_start,
        scheduled=max(0, number - warmup_count),
    )


_NOT_ERRORS = ("timeout", "no_connection")


def _outcome_counts(outcomes: collections.Counter[str], expected: int) -> dict[str, int]:
    """The outcome keys of the output: answers, the expected ones, and everything else."""
    answered = sum(n for key, n in outcomes.items() if key.isdigit())
    good = outcomes.get(str(expected), 0)
    bad = sum(outcomes.values()) - good
    return {
        "completed": answered,
        "accepted": good,
        "non_202": bad,
        "unexpected": bad,
        "other_status": answered - good,
        "timeouts": outcomes.get("timeout", 0),
        "no_connection": outcomes.get("no_connection", 0),
        "errors": sum(
            n for key, n in outcomes.items() if not key.isdigit() and key not in _NOT_ERRORS
        ),
    }


class _Meter:
    """The server's and the broker's CPU and memory over the measured part."""

    def __init__(self, server_pid: int | None, broker_pid: int | None) -> None:
        self._pid = server_pid
        self._broker_pid = broker_pid
        self._peak_reset = False
        self._cpu = self._broker = self._client = 0.0

    def start(self) -> None:
        self._peak_reset = procfs.reset_peak_rss(self._pid) if self._pid else False
        self._cpu = procfs.cpu_seconds(self._pid) if self._pid else 0.0
        self._broker = procfs.cpu_seconds(self._broker_pid) if self._broker_pid else 0.0
        self._client = time.process_time()

    def stop(self) -> dict[str, Any]:
        client_cpu_s = time.process_time() - self._client
        broker_cpu_s = (
            procfs.cpu_seconds(self._broker_pid) - self._broker if self._broker_pid else None
        )
        server: dict[str, Any] = {}
        if self._pid:
            memory = procfs.memory_kib(self._pid)
            server = {
                "cpu_s": procfs.cpu_seconds(self._pid) - self._cpu,
                "peak_rss_kib": memory["VmHWM"],
                "peak_is_run_only": self._peak_reset,
                "rss_after_kib": memory["VmRSS"],
            }
        return {"client_cpu_s": client_cpu_s, "broker_cpu_s": broker_cpu_s, "server": server}


def _client(args: argparse.Namespace) -> Client:
    if args.client == "raw":
        return RawClient(args.url)
    return HttpxClient(args.url, args.timeout_s)


def _common(args: argparse.Namespace, mode: str, tally: Tally, wall_s: float) -> dict[str, Any]:
    counts = _outcome_counts(tally.outcomes, args.expect_status)
    return {
        "mode": mode,
        "url": args.url,
        "client": args.client,
        "expected_status": args.expect_status,
        "requests": args.requests,
        **counts,
        "outcomes": dict(tally.outcomes),
        "wall_s": wall_s,
        "throughput_rps": counts["completed"] / wall_s if wall_s > 0 else 0.0,
        "latency": histogram_summary(tally.histogram),
        "histogram": encode_histogram(tally.histogram),
    }


async def run_closed(args: argparse.Namespace) -> dict[str, Any]:
    client = _client(args)
    meter = _Meter(args.server_pid, args.broker_pid)
    try:
        async with asyncio.timeout(args.timeout_s):
            senders = [await client.sender() for _ in range(args.concurrency)]
        warm = Tally()
        if args.warmup or args.warmup_s:
            warm, _ = await _closed_loop(
                senders,
                count=args.warmup if args.warmup else sys.maxsize,
                duration_s=args.warmup_s if args.warmup_s else math.inf,
                deadline_s=args.deadline_s,
                timeout_s=args.timeout_s,
                tag=f"{args.tag}-warmup",
            )
        meter.start()
        tally, wall_s = await _closed_loop(
            senders,
            count=args.requests,
            duration_s=args.duration_s if args.duration_s else math.inf,
            deadline_s=args.deadline_s,
            timeout_s=args.timeout_s,
            tag=args.tag,
        )
        measured = meter.stop()
    finally:
        await client.aclose()
    unsent = args.requests - sum(tally.outcomes.values())
    by_deadline = args.duration_s is None or args.deadline_s < args.duration_s
    stopped_by = "count" if unsent == 0 else "deadline" if by_deadline else "duration"
    return {
        **_common(args, "closed", tally, wall_s),
        "concurrency": args.concurrency,
        "duration_s": args.duration_s,
        # Requests left when the deadline stopped the run (a failure of the run); a run that
        # ended at --duration-s rather than after N requests has none.
        "not_sent": unsent if stopped_by == "deadline" else 0,
        "stopped_by": stopped_by,
        "warmup_outcomes": dict(warm.outcomes),
        **measured,
    }


async def run_open(args: argparse.Namespace) -> dict[str, Any]:
    client = _client(args)
    meter = _Meter(args.server_pid, args.broker_pid)
    pool = _Pool(client, args.connections)
    warmup_count = (args.warmup or 0) + round((args.warmup_s or 0.0) * args.rate)
    try:
        result = await _open_loop(
            pool,
            rate=args.rate,
            warmup_count=warmup_count,
            count=args.requests,
            deadline_s=args.deadline_s,
            timeout_s=args.timeout_s,
            tag=args.tag,
            on_measured_start=meter.start,
        )
        if result.measured_start is None:
            meter.start()  # the deadline came first: nothing was measured
        measured = meter.stop()
    finally:
        await client.aclose()
    tally = result.measured
    start = result.measured_start
    wall_s = max(0.0, tally.last_end - start) if start is not None else 0.0
    accepted = tally.outcomes.get(str(args.expect_status), 0)
    lag = histogram_summary(result.lag)
    return {
        **_common(args, "open", tally, wall_s),
        "concurrency": None,
        "rate": args.rate,
        "offered_rps": args.rate,
        "achieved_rps": accepted / wall_s if wall_s > 0 else 0.0,
        "connections": args.connections,
        "connections_opened": pool.opened,
        "peak_waiting_for_connection": pool.peak_waiting,
        "warmup_s": args.warmup_s,
        "warmup_requests": warmup_count,
        "not_sent": args.requests - result.scheduled,
        "stopped_by": "count" if result.scheduled == args.requests else "deadline",
        "warmup_outcomes": dict(result.warmup.outcomes),
        "schedule_lag_ms": {key: lag[key] for key in ("p50_ms", "p99_ms", "max_ms")},
        **measured,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    return await (run_open(args) if args.rate else run_closed(args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="POSTs against one loopback URL in a closed loop (--concurrency) or an "
        "open loop (--rate); prints JSON.",
    )
    parser.add_argument(
        "url", help="e.g. http://127.0.0.1:8000/verification-emails (query kept as given)"
    )
    parser.add_argument("--requests", type=int, required=True, help="measured requests")
    parser.add_argument("--concurrency", type=int, help="closed loop: this many workers")
    parser.add_argument("--duration-s", type=float, help="closed loop: stop measuring after")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument(
        "--connections", type=int, default=256, help="open loop: at most this many (256)"
    )
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests first")
    parser.add_argument("--warmup-s", type=float, default=0.0, help="unmeasured seconds first")
    parser.add_argument("--expect-status", type=int, default=202, help="success (202)")
    parser.add_argument("--deadline-s", type=float, default=60.0, help="stop sending after")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=15.0,
        help="per request; open loop: also the longest wait for a connection",
    )
    parser.add_argument("--server-pid", type=int, help="measure this process's CPU and RSS")
    parser.add_argument("--broker-pid", type=int, help="measure this process's CPU too")
    parser.add_argument("--tag", default="run", help="part of every email address")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    if (args.rate is None) == (args.concurrency is None):
        parser.error("give either --concurrency (closed loop) or --rate (open loop)")
    if args.concurrency is not None and not 1 <= args.concurrency <= 1024:
        parser.error("--concurrency must be within 1..1024")
    if args.rate is not None:
        if not 0 < args.rate <= 100_000:
            parser.error("--rate must be within (0, 100000]")
        if not 1 <= args.connections <= 4096:
            parser.error("--connections must be within 1..4096")
        if args.duration_s is not None:
            parser.error("--duration-s is for the closed loop; the open loop sends N at R/s")
    if args.duration_s is not None and args.duration_s <= 0:
        parser.error("--duration-s must be > 0")
    if args.warmup < 0 or args.warmup_s < 0 or args.deadline_s <= 0 or args.timeout_s <= 0:
        parser.error("--warmup, --warmup-s must be >= 0; --deadline-s, --timeout-s > 0")
    if not 100 <= args.expect_status <= 599:
        parser.error("--expect-status must be an HTTP status")
    parts = urlsplit(args.url)
    if parts.scheme != "http":
        parser.error("only http:// URLs")
    _require_loopback(parts.hostname or "")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
