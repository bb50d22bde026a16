"""What a fault scenario is given: the plan of the run, and the context its script acts on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.accounting import Load
from chaos.service import Service
from devtools.faultproxy import FaultProxy
from devtools.kafka import KafkaCluster


@dataclass(frozen=True, slots=True)
class Plan:
    requests: int
    concurrency: int
    down_s: float
    bounces: int
    # how long a partition, a pause, a slow or lossy link or a locked store lasts
    fault_s: float = 20.0
    request_timeout_s: float = 30.0
    # each client's pause between an answer and its next request (0: none)
    pause_s: float = 0.0

    @property
    def load_deadline_s(self) -> float:
        # a bound, not an expectation: at least 10 requests a second on average
        return 120.0 + self.requests / 10


@dataclass(slots=True)
class Context:
    cluster: KafkaCluster
    proxy: FaultProxy
    topic: str
    load: Load
    service: Service
    plan: Plan
    store_path: Path
    notes: list[str] = field(default_factory=list)
    # what the script observed, for tests to check that the fault really happened
    facts: dict[str, Any] = field(default_factory=dict)

    def at(self, share: float) -> int:
        return max(1, int(self.load.requests * share))

    def note(self, text: str) -> None:
        since = time.monotonic() - (self.load.started_at or time.monotonic())
        self.notes.append(f"{since:.1f}s: {text}")

    async def wait_share(self, share: float) -> bool:
        """Wait until `share` of the requests were answered; False if the load ended first."""
        return await self.load.wait_answered(self.at(share), timeout_s=self.plan.load_deadline_s)


Script = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    description: str
    script: Script
    outbox: bool = False
    # the service is killed: a record published but not yet marked delivered goes again
    crash: bool = False
