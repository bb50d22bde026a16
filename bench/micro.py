"""In-process micro benchmark: N publishes through one client library, without HTTP.

    python -m bench.micro CLIENT --bootstrap-servers HOST:PORT --topic T
                          [--sequential N] [--concurrent N] [--concurrency C]

Clients (each imports only its own library, so the process's memory is that client's):
- `facade`: this project's `KafkaPublisher.publish` (settings from `app.config`, default
  policy: acks=all, idempotent, with its deadline and receipt);
- `aiokafka`: `AIOKafkaProducer.send_and_wait` (acks=all, idempotent);
- `faststream`: `KafkaBroker.publisher(topic).publish(...)` (acks=all, idempotent), which
  returns aiokafka's `RecordMetadata`;
- `confluent`: confluent-kafka's `Producer` through `bench.confluent_bridge` (acks=all,
  idempotent, linger.ms=0); `confluent_linger5` is the same with librdkafka's default
  linger.ms=5.

How it measures:
- Every message is the app's own verification-email event, each for its own address like
  sign-ups (JSON value of ~240 bytes, key = the email, three headers), built before the
  clock starts, each with its own event id; FastStream adds its `content-type` and
  `correlation_id` headers.
- `sequential`: one publish at a time, each awaited. `concurrent`: C tasks publishing at
  once until N were published (the producer batches what queues up meanwhile).
- Each mode is preceded by 50 unmeasured publishes. Latency is per publish (call to
  acknowledgement); throughput is acknowledged messages / wall time; CPU is the process's
  CPU time (every thread: librdkafka's included) per message.
- Bounded: each mode stops starting publishes after `--deadline-s`; failures are counted.

Prints one JSON object on stdout, with the process's RSS once the client is started (before
the messages are built) and its peak RSS (`VmHWM`, prebuilt messages included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import uvloop

from app.verification.events import VerificationEmailRequested
from bench import procfs
from bench.stats import latency_summary
from kafka_events.messages import OutgoingMessage

WARMUP = 50
CLIENTS = ("facade", "aiokafka", "faststream", "confluent", "confluent_linger5")

# Publishes one message; returns its offset once the broker acknowledged it.
Publish = Callable[[OutgoingMessage], Awaitable[int]]


@dataclass(slots=True)
class Client:
    publish: Publish
    stop: Callable[[], Awaitable[Any]]


async def _facade(servers: str) -> Client:
    from app.config import load_settings
    from kafka_events import KafkaPublisher

    os.environ["KAFKA__BOOTSTRAP_SERVERS"] = servers
    settings = load_settings()
    publisher = KafkaPublisher(settings.kafka, settings.kafka.policies.replicated)
    await publisher.start()

    async def publish(message: OutgoingMessage) -> int:
        receipt = await publisher.publish(message)
        if receipt.offset is None:
            raise RuntimeError("unconfirmed publish")
        return receipt.offset

    return Client(publish, publisher.stop)


async def _aiokafka(servers: str) -> Client:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    producer = AIOKafkaProducer(
        bootstrap_servers=servers.split(","),
        client_id="bench-micro-aiokafka",
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()

    async def publish(message: OutgoingMessage) -> int:
        metadata = await producer.send_and_wait(
            message.topic, message.value, key=message.key, headers=list(message.headers)
        )
        offset: int = metadata.offset
        return offset

    return Client(publish, producer.stop)


async def _faststream(servers: str, topic: str) -> Client:
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(
        servers.split(","), client_id="bench-micro-faststream", acks="all", enable_idempotence=True
    )
    publisher = broker.publisher(topic)
    await broker.start()

    async def publish(message: OutgoingMessage) -> int:
        metadata = await publisher.publish(
            message.value,
            key=message.key,
            headers={name: value.decode() for name, value in message.headers},
        )
        offset: int = metadata.offset
        return offset

    return Client(publish, broker.stop)


async def _confluent(servers: str, linger_ms: int) -> Client:
    from bench.confluent_bridge import AsyncConfluentProducer, librdkafka_config

    producer = AsyncConfluentProducer(
        librdkafka_config(servers.split(","), "bench-micro-confluent", linger_ms=linger_ms)
    )
    await producer.start()

    async def publish(message: OutgoingMessage) -> int:
        record = await producer.produce(
            message.topic, message.value, key=message.key, headers=message.headers
        )
        return record.offset

    return Client(publish, producer.stop)


async def make_client(name: str, servers: str, topic: str) -> Client:
    if name == "facade":
        return await _facade(servers)
    if name == "aiokafka":
        return await _aiokafka(servers)
    if name == "faststream":
        return await _faststream(servers, topic)
    if name == "confluent":
        return await _confluent(servers, linger_ms=0)
    if name == "confluent_linger5":
        return await _confluent(servers, linger_ms=5)
    raise ValueError(f"unknown client {name!r}")


def messages(topic: str, count: int) -> list[OutgoingMessage]:
    """`count` events, each with its own event id and address (same size on the wire)."""
    template = VerificationEmailRequested(
        email="bench-micro@example.com", redirect_url="https://app.example.com/verify"
    )
    out = []
    for number in range(count):
        event = VerificationEmailRequested(
            email=f"bench-micro-{number % 1000:03d}@example.com",
            redirect_url=template.redirect_url,
            occurred_at=template.occurred_at,
        )
        out.append(event.to_message(topic))
    return out


async def measure(
    client: Client, batch: Sequence[OutgoingMessage], concurrency: int, deadline_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    next_index = 0
    cpu_before = time.process_time()
    started = time.perf_counter()
    stop_at = started + deadline_s

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(batch) and time.perf_counter() < stop_at:
            message = batch[next_index]
            next_index += 1
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(deadline_s):
                    await client.publish(message)
            except Exception as exc:  # noqa: BLE001 - counted and reported, whatever it is
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_before
    done = len(latencies)
    return {
        "messages": len(batch),
        "concurrency": concurrency,
        "acknowledged": done,
        "failures": failures,
        "wall_s": wall_s,
        "throughput_mps": done / wall_s if wall_s > 0 else 0.0,
        "cpu_us_per_message": cpu_s / done * 1e6 if done else float("nan"),
        "latency": latency_summary(latencies),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = {"sequential": (args.sequential, 1), "concurrent": (args.concurrent, args.concurrency)}
    async with asyncio.timeout(30):
        client = await make_client(args.client, args.bootstrap_servers, args.topic)
    # Before the messages are built: the library, its client and the interpreter only.
    started_rss_kib = procfs.memory_kib(os.getpid())["VmRSS"]
    batches = {mode: messages(args.topic, WARMUP + n) for mode, (n, _) in sizes.items()}
    sample = batches["sequential"][0]
    results: dict[str, Any] = {}
    try:
        for mode, (_, concurrency) in sizes.items():
            batch = batches[mode]
            await measure(client, batch[:WARMUP], concurrency, args.deadline_s)
            results[mode] = await measure(client, batch[WARMUP:], concurrency, args.deadline_s)
    finally:
        async with asyncio.timeout(30):
            await client.stop()
    return {
        "client": args.client,
        "topic": args.topic,
        "value_bytes": len(sample.value),
        "key_bytes": len(sample.key or b""),
        "headers": len(sample.headers),
        "started_rss_kib": started_rss_kib,
        "peak_rss_kib": procfs.memory_kib(os.getpid())["VmHWM"],
        **results,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.micro", description="N publishes through one client; JSON out."
    )
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--deadline-s", type=float, default=60.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    result = uvloop.run(run(parse_args(argv)))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
