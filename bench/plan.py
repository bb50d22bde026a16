"""What `make bench` runs: the phases (broker, acks level, server processes), the contenders
of each, and how many requests each measurement takes.

A phase starts its broker (one node, or three), then for each round starts every contender in
turn (A B C D, A B C D, ... with the order rotated each round, so slow drift of the machine
does not always hit the same one) and, while it runs, takes every measurement of the phase
from it. Each contender has its own topic per phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PHASES", "Phase", "Sizes", "sizes"]

# The contenders the targets name, and ours.
TARGETED = ("app", "nest_emit", "kafkajs", "faststream", "raw_aiokafka")
EMIT_KAFKA = (*TARGETED, "confluent", "confluent_aio")


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    title: str
    brokers: int
    acks: str
    workers: int
    contenders: tuple[str, ...]
    concurrencies: tuple[int, ...] = (1, 32, 128)
    seed_method: bool = False  # the mean of 32 and of 1,000 serial requests
    open_loop: tuple[str, ...] = ()  # contenders also measured at fixed offered rates


PHASES: tuple[Phase, ...] = (
    Phase(
        "main",
        "one broker, acks=all (idempotent), one server process",
        brokers=1,
        acks="all",
        workers=1,
        contenders=(
            *EMIT_KAFKA,
            "producer_per_request",
            "http_only",
            "app_reply",
            "nest_send",
        ),
        seed_method=True,
        open_loop=(*TARGETED, "confluent", "http_only"),
    ),
    Phase("acks1", "one broker, acks=1", brokers=1, acks="1", workers=1, contenders=EMIT_KAFKA),
    Phase("acks0", "one broker, acks=0", brokers=1, acks="0", workers=1, contenders=EMIT_KAFKA),
    Phase(
        "workers2",
        "one broker, acks=all, two server processes",
        brokers=1,
        acks="all",
        workers=2,
        contenders=(*EMIT_KAFKA, "http_only"),
    ),
    Phase(
        "cluster3",
        "three brokers (replication factor 3, min.insync.replicas 2), acks=all, one server process",
        brokers=3,
        acks="all",
        workers=1,
        contenders=EMIT_KAFKA,
    ),
)


@dataclass(frozen=True, slots=True)
class Sizes:
    rounds: int
    serial: tuple[int, ...]  # the seed's method: N serial requests, the mean reported
    closed_duration_s: float  # C > 1: measured time per run
    closed_requests_c1: int  # C = 1: requests per run (the seed's 1,000)
    open_rates: tuple[int, ...]  # offered req/s
    open_samples: int  # measured samples per rate, over all rounds together
    open_warmup_s: float
    soak_s: float
    soak_rate: int
    micro_sequential: int
    micro_concurrent: int

    def open_requests_per_round(self) -> int:
        return math.ceil(self.open_samples / self.rounds)

    def warmup(self, concurrency: int) -> int:
        return 20 + 2 * concurrency


def sizes(*, quick: bool) -> Sizes:
    if quick:
        return Sizes(
            rounds=1,
            serial=(32, 100),
            closed_duration_s=1.0,
            closed_requests_c1=100,
            open_rates=(200, 800),
            open_samples=400,
            open_warmup_s=0.5,
            soak_s=20,
            soak_rate=100,
            micro_sequential=100,
            micro_concurrent=500,
        )
    return Sizes(
        rounds=3,
        serial=(32, 1000),
        closed_duration_s=3.0,
        closed_requests_c1=1000,
        open_rates=(400, 800, 1200, 1600, 2400),
        open_samples=10_002,
        open_warmup_s=1.0,
        soak_s=600,
        soak_rate=200,
        micro_sequential=2000,
        micro_concurrent=20000,
    )
