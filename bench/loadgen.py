"""HTTP load generator: N `POST /verification-emails` at concurrency C, in a process of its own.

    python -m bench.loadgen URL --requests N --concurrency C [--warmup W] [--server-pid PID]

How it measures:
- C workers on uvloop, each with its own keep-alive connection, take the next request
  number until N were sent or `--deadline-s` passed (bounded in count and in time); every
  request has its own timeout (`--timeout-s`).
- The default client (`--client raw`) is a minimal HTTP/1.1 client on an asyncio protocol:
  it writes the request bytes and reads the status line, the headers and `Content-Length`
  bytes of body. It costs a few tens of microseconds of CPU per request, where httpx
  (`--client httpx`, one `AsyncClient` per worker) costs about 0.8 ms; on a 2-core machine
  shared with the broker and the server that difference is CPU taken from what is measured.
- First `W` warm-up requests (not measured) open the connections and warm the server.
- Latency: from just before the request is written to the end of its response, for every
  response whatever its status. Throughput: completed responses / wall time of the
  measured part. Transport errors and timeouts are counted apart.
- With `--server-pid`: the server's CPU time (utime+stime, all threads) during the measured
  part, its peak RSS during it (`VmHWM`, reset just before via `/proc/<pid>/clear_refs`) and
  its RSS right after it. With `--broker-pid`: the broker's CPU time during the same part.
- Each email is unique (`bench-<tag>-<n>@example.com`): one key per request, like sign-ups.
- Only loopback targets are accepted.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import uvloop

from bench import procfs
from bench.stats import latency_summary

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
        self._head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
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
    """`Send` functions over httpx, one `AsyncClient` per worker (a shared pool is far
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


async def _send_all(
    senders: list[Send], *, count: int, deadline_s: float, timeout_s: float, tag: str
) -> tuple[list[float], collections.Counter[str], float]:
    """Send `count` requests over the workers' senders; latencies, outcomes, wall time."""
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    next_number = 0
    started = time.perf_counter()
    stop_at = started + deadline_s

    async def worker(send: Send) -> None:
        nonlocal next_number
        while next_number < count and time.perf_counter() < stop_at:
            number = next_number
            next_number += 1
            body = json.dumps(
                {"email": f"bench-{tag}-{number}@example.com", "redirect_url": REDIRECT_URL}
            ).encode()
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    status = await send(body)
            except TimeoutError:
                outcomes["timeout"] += 1
                continue
            except (OSError, httpx.HTTPError) as exc:
                outcomes[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - sent)
            outcomes[str(status)] += 1

    await asyncio.gather(*(worker(send) for send in senders))
    return latencies, outcomes, time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = RawClient(args.url) if args.client == "raw" else HttpxClient(args.url, args.timeout_s)
    pid: int | None = args.server_pid
    try:
        async with asyncio.timeout(args.timeout_s):
            senders = [await client.sender() for _ in range(args.concurrency)]
        warm: collections.Counter[str] = collections.Counter()
        if args.warmup:
            _, warm, _ = await _send_all(
                senders,
                count=args.warmup,
                deadline_s=args.deadline_s,
                timeout_s=args.timeout_s,
                tag=f"{args.tag}-warmup",
            )
        peak_reset = procfs.reset_peak_rss(pid) if pid else False
        cpu_before = procfs.cpu_seconds(pid) if pid else 0.0
        broker_before = procfs.cpu_seconds(args.broker_pid) if args.broker_pid else 0.0
        client_cpu_before = time.process_time()
        latencies, outcomes, wall_s = await _send_all(
            senders,
            count=args.requests,
            deadline_s=args.deadline_s,
            timeout_s=args.timeout_s,
            tag=args.tag,
        )
        client_cpu_s = time.process_time() - client_cpu_before
        broker_cpu_s = (
            procfs.cpu_seconds(args.broker_pid) - broker_before if args.broker_pid else None
        )
        server: dict[str, Any] = {}
        if pid:
            memory = procfs.memory_kib(pid)
            server = {
                "cpu_s": procfs.cpu_seconds(pid) - cpu_before,
                "peak_rss_kib": memory["VmHWM"],
                "peak_is_run_only": peak_reset,
                "rss_after_kib": memory["VmRSS"],
            }
    finally:
        await client.aclose()
    completed = len(latencies)
    return {
        "url": args.url,
        "client": args.client,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "completed": completed,
        "accepted": outcomes.get("202", 0),
        "non_202": sum(n for outcome, n in outcomes.items() if outcome != "202"),
        "not_sent": args.requests - sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "warmup_outcomes": dict(warm),
        "wall_s": wall_s,
        "throughput_rps": completed / wall_s if wall_s > 0 else 0.0,
        "latency": latency_summary(latencies),
        "client_cpu_s": client_cpu_s,
        "broker_cpu_s": broker_cpu_s,
        "server": server,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="N POSTs at concurrency C against one loopback URL; prints JSON.",
    )
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/verification-emails")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests first")
    parser.add_argument("--deadline-s", type=float, default=60.0, help="stop sending after")
    parser.add_argument("--timeout-s", type=float, default=15.0, help="per request")
    parser.add_argument("--server-pid", type=int, help="measure this process's CPU and RSS")
    parser.add_argument("--broker-pid", type=int, help="measure this process's CPU too")
    parser.add_argument("--tag", default="run", help="part of every email address")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    args = parser.parse_args(argv)
    if args.requests < 1 or not 1 <= args.concurrency <= 1024:
        parser.error("--requests must be >= 1 and --concurrency within 1..1024")
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
