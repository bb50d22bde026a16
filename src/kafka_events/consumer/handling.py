"""What a consumer runner's handler gets and gives: the config, the `Outcome` of a record,
the `Tools` it may use, and the two exceptions that leave a record uncommitted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from kafka_events.config import PositiveMs, TopicName
from kafka_events.consumer.handled import HandledEvents

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

_T = TypeVar("_T")


class ConsumerConfig(BaseModel):
    """One consumer group's reading of one topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: TopicName
    group_id: str = Field(min_length=1)
    client_id: str = Field(default="kafka-events-consumer", min_length=1)
    # None: the handler's failures are not dead-lettered (an Outcome asking for it is refused)
    dead_letter_topic: TopicName | None = None
    backoff_initial_ms: PositiveMs = 500
    backoff_max_ms: PositiveMs = 10000
    start_timeout_ms: PositiveMs = 30000
    produce_timeout_ms: PositiveMs = 10000
    commit_timeout_ms: PositiveMs = 10000
    shutdown_timeout_ms: PositiveMs = 30000
    max_poll_interval_ms: PositiveMs = 300000
    # a handler that raises an unexpected error this many times in a row on one record: the
    # record is dead-lettered (without a dead-letter topic, skipped), so it cannot hold its
    # partition
    max_handler_errors: int = Field(default=3, ge=1, le=100)


class RunnerState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class RetryLater(Exception):
    """Kafka or the database failed while a record was handled: it is handled again later."""


class Stopping(Exception):
    """`stop()` was called during a pause between attempts: the record is left uncommitted."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record: `status` (counted and replied), and whether it goes to the
    dead-letter topic, with why (`error_type`, `detail`) after how many `attempts`."""

    status: str
    event_id: str | None
    attempts: int = 0
    error_type: str | None = None
    detail: str | None = None
    dead_letter: bool = False


class Tools:
    """What a handler may use while it handles a record."""

    def __init__(
        self,
        config: ConsumerConfig,
        stopping: asyncio.Event,
        handled: HandledEvents | None,
        tracer: Callable[[], Tracer | None],
    ) -> None:
        self._config = config
        self._stopping = stopping
        self.handled = handled
        self._tracer = tracer

    @property
    def tracer(self) -> Tracer | None:
        """The runner's tracer (None: tracing off), for the handler's own spans."""
        return self._tracer()

    async def sleep(self, seconds: float) -> None:
        """Wait, unless the runner is stopped meanwhile.

        Raises:
            Stopping: `stop()` was called; leave the record (it is handled again later).
        """
        stopping = self._stopping
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stopping.wait()
        if stopping.is_set():
            raise Stopping

    async def database(self, step: Awaitable[_T]) -> _T:
        """`step`, within `commit_timeout_ms`.

        Raises:
            RetryLater: the database failed or was too slow.
        """
        try:
            async with asyncio.timeout(self._config.commit_timeout_ms / 1000):
                return await step
        except (SQLAlchemyError, OSError) as error:  # TimeoutError is an OSError
            raise RetryLater(f"database: {error!r}") from error


class Handler(Protocol):
    async def __call__(self, record: Any, tools: Tools) -> Outcome: ...
