"""One long-lived `AIOKafkaProducer` and its lifecycle, shared by the policies that fit it.

Lifecycle::

    NEW --start()--> CONNECTING --connected--> READY --stop()--> STOPPING --> STOPPED
                         ^   (background reconnect, backoff capped)          |
                         +-- a broken producer (transaction in doubt) -------+ (only READY)
                                                READY --fenced--> FENCED (for good)

`start()` makes one bounded connection attempt. If no broker answers, the application still
starts: the producer keeps trying in the background (capped exponential backoff with jitter,
each attempt bounded by `connect_timeout_ms`) until it connects or is stopped, and reports not
ready meanwhile. If the brokers refuse it (an authorisation failure: retrying cannot help),
`start()` raises instead.

`stop()` flushes what is buffered for at most `close_timeout_ms`, fails what is left (its
publishers get an error, nothing hangs) and closes the connections.

The state is never None-checked by callers: `wait_ready()` gives the connected aiokafka
producer or raises, and `current` is the producer when READY (else None, for the fast path).

`Any` from the untyped aiokafka stays in this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, ProducerClosed  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]

from kafka_events import access as _access
from kafka_events import errors as _errors
from kafka_events import options as _options
from kafka_events._retry import connect_until_stopped
from kafka_events.config import KafkaConfig, Policy
from kafka_events.metrics import Metrics

logger = logging.getLogger(__name__)

ProducerFactory = Callable[[], Any]


class ProducerState(StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    READY = "ready"
    FENCED = "fenced"  # another process took over our transactional id: we must not publish
    STOPPING = "stopping"
    STOPPED = "stopped"


class ManagedProducer:
    """One aiokafka producer, connected in the background, flushed and closed on `stop()`."""

    def __init__(
        self,
        kafka: KafkaConfig,
        policy: Policy,
        *,
        name: str,
        policies: Sequence[str] = (),
        metrics: Metrics | None = None,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        """
        Args:
            kafka: the brokers and transport options.
            policy: the policy whose producer options (acks, idempotence, linger,
                transactional id) this producer has.
            name: for logs and the client id (`<producer.client_id>-<name>`).
            policies: the names of the policies sharing it, for the `producer_ready` gauge
                (default: `name`).
            metrics: where to count; none: unregistered series.
            producer_factory: makes the aiokafka producer (tests).
        """
        self._kafka = kafka
        self._transport = kafka.producer
        self.policy = policy
        self.name = name
        self._policies = tuple(policies) or (name,)
        self._metrics = metrics or Metrics(None)
        self._factory: ProducerFactory = producer_factory or (
            lambda: AIOKafkaProducer(
                **_options.producer_options(
                    kafka, policy, client_id=_options.producer_client_id(kafka, name)
                )
            )
        )
        self._state = ProducerState.NEW
        self._producer: Any = None
        self._ready = asyncio.Event()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._connect_error: BaseException | None = None  # of the last failed attempt
        # One transaction at a time per transactional producer (aiokafka's rule).
        self.transaction_lock = asyncio.Lock()
        self._closing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def state(self) -> ProducerState:
        return self._state

    @property
    def current(self) -> Any:
        """The aiokafka producer when READY, else None."""
        return self._producer if self._state is ProducerState.READY else None

    @property
    def started(self) -> bool:
        """Whether it is between `start()` and the end of `stop()`."""
        return self._state not in (ProducerState.NEW, ProducerState.STOPPED)

    def _enter(self, state: ProducerState) -> None:
        self._state = state
        for policy in self._policies:
            self._metrics.producer_ready.labels(policy).set(
                1 if state is ProducerState.READY else 0
            )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect once (bounded); on failure keep connecting in the background.

        Raises:
            PublisherStateError: if it was started before.
            AccessRefused: the brokers refused this client (e.g. it may not use its
                transactional id); the producer is stopped.
        """
        if self._state is not ProducerState.NEW:
            raise _errors.PublisherStateError(f"producer '{self.name}' was already started")
        self._enter(ProducerState.CONNECTING)
        if not await self._connect_once():
            error = self._connect_error
            refused = _access.refusal(error, self._kafka.security) if error else None
            if refused is not None:
                self._state = ProducerState.STOPPED
                raise refused
            logger.warning(
                "publisher %s: no broker reachable; retrying in the background", self.name
            )
            self._reconnect_task = asyncio.create_task(
                self._reconnect(), name=f"kafka-reconnect-{self.name}"
            )

    async def stop(self) -> None:
        """Flush (bounded by `close_timeout_ms`) and close. Safe to call more than once."""
        if self._state in (ProducerState.STOPPING, ProducerState.STOPPED):
            return
        previous = self._state
        self._enter(ProducerState.STOPPING)
        self._ready.set()  # wake waiters so they see STOPPING instead of waiting out the deadline
        self._stopping.set()
        if self._reconnect_task is not None:
            # Let a connection attempt finish rather than cancel it: aiokafka leaves a socket
            # open when cancelled while bootstrapping. Bounded by the attempt's own timeout.
            limit_s = (self._transport.connect_timeout_ms + self._transport.close_timeout_ms) / 1000
            done, _ = await asyncio.wait({self._reconnect_task}, timeout=limit_s + 1)
            if not done:
                self._reconnect_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reconnect_task
        if self._closing is not None:  # a fenced producer being closed (bounded)
            await asyncio.wait({self._closing}, timeout=3 * self._transport.close_timeout_ms / 1000)
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer, flush=True)
        self._enter(ProducerState.STOPPED)
        if previous is not ProducerState.NEW:
            logger.info("publisher %s stopped", self.name)

    async def _connect_once(self) -> bool:
        if self._stopping.is_set():
            return True  # nothing more to connect: the producer is stopping
        producer = self._factory()
        try:
            async with asyncio.timeout(self._transport.connect_timeout_ms / 1000):
                await producer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            logger.warning("publisher %s: connect failed: %s", self.name, type(exc).__name__)
            self._connect_error = exc
            await self._close(producer, flush=False)
            return False
        except asyncio.CancelledError:
            # stop() cancels a background reconnect; the half-started producer may already
            # hold connections (e.g. while it waits for a producer id), so close it first
            await self._close(producer, flush=False)
            raise
        if self._state is not ProducerState.CONNECTING:  # stopped while connecting
            await self._close(producer, flush=False)
            return True
        self._producer = producer
        self._enter(ProducerState.READY)
        self._ready.set()
        logger.info(
            "publisher %s connected (acks=%s, idempotent=%s)",
            self.name,
            self.policy.acks.value,
            self.policy.enable_idempotence,
        )
        return True

    async def _reconnect(self) -> None:
        # Bounded per attempt (connect_timeout_ms); runs only while the app runs and stops with it.
        await connect_until_stopped(
            self._connect_once, self._stopping, self._transport.reconnect_backoff_max_ms
        )

    async def wait_ready(self, event_id: str) -> Any:
        """The connected aiokafka producer, once there is one (the caller bounds the wait).

        Raises:
            PublishRejected: fenced (another process uses the transactional id).
            BrokerUnavailable: the producer is stopping or stopped.
        """
        if self._state is ProducerState.FENCED:
            raise _errors.PublishRejected(
                f"publisher '{self.name}' was fenced: another process uses transactional_id "
                f"{self.policy.transactional_id!r}",
                event_id=event_id,
                cause="ProducerFenced",
            )
        if self._state is not ProducerState.READY:
            await self._ready.wait()
        if self._state is not ProducerState.READY or self._producer is None:
            raise _errors.BrokerUnavailable(
                f"publisher '{self.name}' is {self._state.value}", event_id=event_id
            )
        return self._producer

    def fence(self, producer: Any) -> None:
        """A newer producer owns our transactional id: stop for good (a zombie must not come
        back and fence the newer one in turn). Publishes are refused from now on."""
        if self._producer is not producer:
            return
        self._producer = None
        self._enter(ProducerState.FENCED)
        self._ready.set()
        logger.error(
            "publisher %s fenced: another process uses transactional_id %r; not publishing",
            self.name,
            self.policy.transactional_id,
        )
        self._closing = asyncio.create_task(
            self._close(producer, flush=False), name=f"kafka-close-{self.name}"
        )

    def recycle(self, producer: Any) -> None:
        """Replace a producer whose state is in doubt (e.g. a transaction that failed).

        It is taken out of use at once (the next publish waits for its replacement), then
        closed and replaced in the background.
        """
        if self._producer is not producer or self._state is not ProducerState.READY:
            return
        self._producer = None
        self._ready.clear()
        self._enter(ProducerState.CONNECTING)
        logger.warning("publisher %s: producer state in doubt; reconnecting", self.name)

        async def replace() -> None:
            await self._close(producer, flush=False)
            await self._reconnect()

        self._reconnect_task = asyncio.create_task(replace(), name=f"kafka-reconnect-{self.name}")

    async def _close(self, producer: Any, *, flush: bool) -> None:
        """Flush (optionally) and stop `producer`, every step bounded by `close_timeout_ms`.

        aiokafka's stop() first waits for every buffered batch to be delivered, and an
        idempotent producer retries a batch without end (e.g. while min.insync.replicas cannot
        be met), so stop() alone can hang forever. Hence: flush for at most the timeout; then
        fail what is left (its publishers already got an error at their deadline, and the
        delivery service recorded those messages); then stop; if even that overruns, close the
        connections. Each step runs as a task we stop waiting for at the timeout.
        """
        timeout_s = self._transport.close_timeout_ms / 1000
        if flush and not await _within(producer.flush(), timeout_s):
            logger.error(
                "publisher %s: buffered messages not acknowledged within %d ms of shutdown; "
                "failing them",
                self.name,
                self._transport.close_timeout_ms,
            )
        # Nothing should be left after a flush; whatever is (or if we did not flush) must not
        # keep stop() waiting. aiokafka may log an internal error for a batch in flight.
        producer._message_accumulator.fail_all(ProducerClosed())
        if not await _within(producer.stop(), timeout_s):
            # stop() overran, or failed half-way (aiokafka can trip over the batch we failed)
            # before it closed the client: close the connections ourselves
            logger.error(
                "publisher %s: producer did not stop cleanly within %d ms; closing its connections",
                self.name,
                self._transport.close_timeout_ms,
            )
            for connection in list(producer.client._conns.values()):
                connection.close()  # synchronous; client.close() below may wait on metadata
            await _within(producer.client.close(), timeout_s)

    # -- health ------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when connected and a broker answered a metadata request within the ready timeout."""
        producer = self.current
        if producer is None:
            return False
        client = producer.client
        try:
            async with asyncio.timeout(self._kafka.ready_timeout_ms / 1000):
                node_id = client.get_random_node()
                if node_id is None:
                    return False
                # An empty topic list asks for brokers only: cheap on clusters with many topics.
                await client.send(node_id, MetadataRequest([]))
        except (KafkaError, OSError, TimeoutError):
            return False
        return True


_abandoned: set[asyncio.Task[Any]] = set()  # keeps abandoned close steps referenced


async def _within(step: Awaitable[Any], timeout_s: float) -> bool:
    """Run `step` as a task; True if it ended without error within `timeout_s`.

    An error is logged; a step that overruns is cancelled but not awaited.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()  # asked, not awaited: see ManagedProducer._close
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
        return False
    if task.cancelled():
        return False
    if task.exception() is not None:
        logger.warning("producer close step failed: %r", task.exception())
        return False
    return True
