"""The hostile clients of `python -m bench.edge`, each bounded in time, on loopback only.

Every scenario returns an `Outcome`: how long the server held the attacking connection(s),
what it answered (its status line, or none), whether a normal request sent meanwhile
succeeded (its status or error, and latency), and the server's peak RSS during the scenario
(`VmHWM`, reset before it).

- `idle`: connect, send nothing.
- `slowloris`: a request head trickled one byte every `TRICKLE_INTERVAL_S`, never finished.
- `stalled_body`: a whole head announcing 100 bytes of body, then one byte, then nothing.
- `flood`: `FLOOD` connections each with a half-sent head, then a normal request; the
  flood is then closed and a normal request sent again.
- `header_<size>`: one header field of that many bytes; `header_64MiB_x4`: four at once.
- `headers_20000`: 20,000 small header fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench import procfs

__all__ = ["SCENARIOS", "Outcome", "Target"]

HOLD_CAP_S = 30.0  # how long an attacking connection is watched before giving up
TRICKLE_INTERVAL_S = 1.0
FLOOD = 1100
PROBE_TIMEOUT_S = 10.0
SEND_CAP_S = 30.0  # for sending a huge head
MiB = 1024 * 1024
BODY = json.dumps(
    {"email": "edge-probe@example.com", "redirect_url": "https://app.example.com/verify"}
).encode()


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    rss_pid: int | None  # the process serving requests (a worker, for a supervisor)


@dataclass(slots=True)
class Outcome:
    held_s: float | None = None  # None: still open at the cap
    watched: bool = True  # False: the harness itself closed the connections
    answer: str = "none"  # the status line's code and reason, or "none"
    probe: str = ""  # the normal request's status (or error) and latency
    after: str = ""  # a normal request once the attack ended
    peak_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)


def _request_head(path: str = "/verification-emails") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()


async def probe(target: Target) -> str:
    """One normal `POST /verification-emails`: '202 in 12 ms', or what went wrong."""
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            writer.write(_request_head() + BODY)
            status = (await reader.readline()).decode("latin-1").split(" ", 2)
            code = status[1] if len(status) > 1 else "closed"
    except TimeoutError:
        return f"timeout ({PROBE_TIMEOUT_S:g} s)"
    except OSError as error:
        return type(error).__name__
    finally:
        if writer is not None:
            writer.close()
    return f"{code} in {(time.perf_counter() - started) * 1000:.0f} ms"


async def _watch(reader: asyncio.StreamReader, started: float) -> tuple[float | None, str]:
    """Read until the server closes or the cap: (seconds held or None, the status it sent)."""
    answer = b""
    try:
        async with asyncio.timeout(max(HOLD_CAP_S - (time.monotonic() - started), 0.1)):
            while chunk := await reader.read(65536):
                answer += chunk
    except TimeoutError:
        return None, _status(answer)
    except OSError:
        pass
    return time.monotonic() - started, _status(answer)


def _status(answer: bytes) -> str:
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    return " ".join(parts[1:]) if len(parts) > 1 else "none"


def _rss(target: Target) -> float | None:
    if target.rss_pid is None:
        return None
    return procfs.memory_kib(target.rss_pid)["VmHWM"] / 1024


async def _held(target: Target, first: bytes, trickle: bytes = b"") -> Outcome:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    started = time.monotonic()
    if first:
        writer.write(first)

    async def trickler() -> None:
        with contextlib.suppress(OSError):
            for byte in trickle:
                await asyncio.sleep(TRICKLE_INTERVAL_S)
                writer.write(bytes([byte]))
                await writer.drain()

    task = asyncio.create_task(trickler())
    probe_task = asyncio.create_task(_delayed_probe(target, 3.0))
    held, answer = await _watch(reader, started)
    task.cancel()
    writer.close()
    return Outcome(held_s=held, answer=answer, probe=await probe_task)


async def _delayed_probe(target: Target, delay_s: float) -> str:
    await asyncio.sleep(delay_s)
    return await probe(target)


async def idle(target: Target) -> Outcome:
    return await _held(target, b"")


async def slowloris(target: Target) -> Outcome:
    head = b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return await _held(target, head, b"X-Slow: " + b"a" * 200)


async def stalled_body(target: Target) -> Outcome:
    head = (
        b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    return await _held(target, head)


async def flood(target: Target) -> Outcome:
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    outcome = Outcome(watched=False)
    failed = 0
    for _ in range(FLOOD):
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(target.host, target.port)
        except (OSError, TimeoutError):
            failed += 1
            continue
        writer.write(b"POST /verification-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        readers.append(reader)
        writers.append(writer)
    await asyncio.sleep(1.0)
    outcome.probe = await probe(target)
    closed = sum(1 for reader in readers if reader.at_eof() or _buffered(reader))
    outcome.notes.append(f"{len(writers)} opened, {failed} refused, {closed} closed by 1 s")
    outcome.answer = _first_answer(readers)
    outcome.peak_rss_mib = _rss(target)
    for writer in writers:
        writer.close()
    await asyncio.sleep(1.0)
    outcome.after = await probe(target)
    return outcome


def _buffered(reader: asyncio.StreamReader) -> bool:
    return bool(getattr(reader, "_buffer", b""))


def _first_answer(readers: list[asyncio.StreamReader]) -> str:
    for reader in readers:
        buffered = bytes(getattr(reader, "_buffer", b""))
        if buffered:
            return _status(buffered)
    return "none"


async def _huge_heads(target: Target, size: int, count: int, *, fields: int = 1) -> Outcome:
    """`count` connections each sending a head of one `size`-byte field (or `fields` small
    ones), with a normal request 0.2 s in."""

    async def one() -> tuple[float | None, str, int]:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(SEND_CAP_S):
                writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                if fields > 1:
                    writer.write(b"".join(b"x%d: 1\r\n" % i for i in range(fields)))
                    sent = fields
                else:
                    writer.write(b"X-Big: ")
                    chunk = b"a" * MiB
                    while sent < size:
                        writer.write(chunk[: size - sent])
                        sent += min(MiB, size - sent)
                        await writer.drain()
                writer.write(b"\r\n\r\n")
                await writer.drain()
        held, answer = await _watch(reader, started)
        writer.close()
        return held, answer, sent

    if target.rss_pid is not None:
        procfs.reset_peak_rss(target.rss_pid)
    probe_task = asyncio.create_task(_delayed_probe(target, 0.2))
    results = await asyncio.gather(*(one() for _ in range(count)))
    held = [r[0] for r in results]
    outcome = Outcome(
        held_s=None if None in held else max(h for h in held if h is not None),
        answer=results[0][1],
        probe=await probe_task,
        peak_rss_mib=_rss(target),
    )
    if fields == 1:
        outcome.notes.append(f"server read {min(r[2] for r in results) // MiB} MiB or more")
    return outcome


def _header(size: int, count: int = 1) -> Callable[[Target], Awaitable[Outcome]]:
    async def scenario(target: Target) -> Outcome:
        return await _huge_heads(target, size, count)

    return scenario


async def many_headers(target: Target) -> Outcome:
    return await _huge_heads(target, 0, 1, fields=20000)


# The three connection holds run side by side (each watched for HOLD_CAP_S); the rest in turn.
HOLDS: dict[str, Callable[[Target], Awaitable[Outcome]]] = {
    "idle connection": idle,
    "slowloris (1 byte/s)": slowloris,
    "stalled body": stalled_body,
}
SCENARIOS: dict[str, Callable[[Target], Awaitable[Outcome]]] = {
    f"{FLOOD} stalled connections": flood,
    "1 MiB header": _header(MiB),
    "8 MiB header": _header(8 * MiB),
    "64 MiB header": _header(64 * MiB),
    "4 x 64 MiB headers at once": _header(64 * MiB, 4),
    "20,000 headers": many_headers,
}
