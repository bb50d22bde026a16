"""What our own code costs per publish or per request, with Kafka taken out: CPU time or, under
callgrind, instructions (which a shared, noisy machine does not change).

    python -m bench.overhead publish [-n N] [--concurrency C]
    python -m bench.overhead http [-n N] [--concurrency C] [--bootstrap-servers HOST:PORT]

- `publish`: `KafkaPublisher.publish` with its default policy, through a stub producer whose
  `send` returns a future resolved on the next loop iteration (as a batch acknowledgement
  would be): the facade's own work, without aiokafka and the network.
- `http`: `POST /verification-emails` called in-process through ASGI (no HTTP server, no
  sockets) on the real app with its lifespan (store in a temporary SQLite file), every
  producer replaced by the same stub. Without `--bootstrap-servers` the reply reader finds no
  broker and keeps retrying in the background, with backoff.

The messages are bench.micro's (one address per message, like sign-ups). 300 unmeasured
operations come first; then N are measured with C concurrent tasks. Prints one JSON object
with the process's CPU time (all threads) per operation.

Instructions per operation, robust to noise: run the same command under
`valgrind --tool=callgrind` with two values of N and divide the difference of the two
"Collected" totals by the difference of N (start-up and warm-up cancel out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from starlette.types import Message

from bench import micro

WARMUP = 300
REDIRECT_URL = "https://app.example.com/verify"


class _Metadata:
    """aiokafka's RecordMetadata, as far as the publisher reads it."""

    topic = "bench"
    partition = 0
    offset = 7
    timestamp = 1000
    timestamp_type = 0
    log_start_offset = -1


class _Accumulator:
    def fail_all(self, _: BaseException) -> None:
        return None


class StubProducer:
    """Just enough of AIOKafkaProducer for the publisher: every send is acknowledged on the
    next loop iteration."""

    def __init__(self, **_: Any) -> None:
        self._message_accumulator = _Accumulator()

    async def start(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        loop.call_soon(future.set_result, _Metadata())
        return future


async def _run(operation: Callable[[int], Awaitable[None]], count: int, concurrency: int) -> None:
    next_number = 0

    async def worker() -> None:
        nonlocal next_number
        while next_number < count:
            number = next_number
            next_number += 1
            await operation(number)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _measure(
    operation: Callable[[int], Awaitable[None]], count: int, concurrency: int
) -> float:
    await _run(operation, WARMUP, concurrency)
    before = time.process_time()
    await _run(lambda number: operation(WARMUP + number), count, concurrency)
    return (time.process_time() - before) / count * 1e6 if count else 0.0


async def publish_overhead(count: int, concurrency: int) -> float:
    """CPU µs per `KafkaPublisher.publish` through the stub producer."""
    from app.config import load_settings
    from kafka_events import KafkaPublisher

    settings = load_settings()
    publisher = KafkaPublisher(
        settings.kafka, settings.kafka.policies.replicated, producer_factory=StubProducer
    )
    await publisher.start()
    batch = micro.messages("bench.overhead", WARMUP + count)

    async def publish(number: int) -> None:
        await publisher.publish(batch[number])

    try:
        return await _measure(publish, count, concurrency)
    finally:
        await publisher.stop()


async def http_overhead(count: int, concurrency: int) -> float:
    """CPU µs per `POST /verification-emails` through ASGI, every producer a stub."""
    from asgi_lifespan import LifespanManager

    import kafka_events.producer.lifecycle
    from app.main import create_app

    # what the producers' default factory builds
    kafka_events.producer.lifecycle.AIOKafkaProducer = StubProducer  # type: ignore[attr-defined]
    statuses: dict[int, int] = {}

    async def post(number: int) -> None:
        body = json.dumps(
            {"email": f"overhead-{number}@example.com", "redirect_url": REDIRECT_URL}
        ).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/verification-emails",
            "raw_path": b"/verification-emails",
            "query_string": b"",
            "root_path": "",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        received = False

        async def receive() -> Message:
            nonlocal received
            if received:  # the app only asks again to learn of a disconnect
                await asyncio.Event().wait()
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await manager.app(scope, receive, send)

    async with LifespanManager(create_app(), startup_timeout=60) as manager:
        cpu_us = await _measure(post, count, concurrency)
    if set(statuses) != {202}:
        raise RuntimeError(f"unexpected answers: {statuses}")
    return cpu_us


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("target", choices=("publish", "http"))
    parser.add_argument("-n", "--count", type=int, default=5000, help="measured operations")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--bootstrap-servers", default="127.0.0.1:9", help="for the reply reader (http only)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch:
        os.environ["KAFKA__BOOTSTRAP_SERVERS"] = args.bootstrap_servers
        os.environ.setdefault("STORE__URL", f"sqlite+aiosqlite:///{Path(scratch) / 'm.db'}")
        os.environ.setdefault("API__LOG_LEVEL", "warning")
        measure = publish_overhead if args.target == "publish" else http_overhead
        cpu_us = uvloop.run(measure(args.count, args.concurrency))
    json.dump(
        {
            "target": args.target,
            "count": args.count,
            "concurrency": args.concurrency,
            "cpu_us_per_operation": round(cpu_us, 1),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
