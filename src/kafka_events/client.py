"""`KafkaEvents`: the one object an application makes, starts and stops.

    async with KafkaEvents(KafkaConfig(...), store=SqlStore(url), policies={...}) as kafka:
        receipt = await kafka.emit(OrderPlaced(...), policy="orders")

Lifecycle (an explicit state, as httpx's clients have)::

    NEW --start() / __aenter__--> RUNNING --stop() / __aexit__--> STOPPED --start()--> RUNNING

A start after a stop makes new clients (producers, relay, reply reader): an application whose
lifespan runs more than once (tests, a reloading server) keeps one `KafkaEvents`.

`start()` opens the store, starts one producer per distinct producer configuration the
policies use (policies differing only in deadline, retries, outbox or ordering share one),
then the relay and the reply reader, and connects the event bus's listeners. `stop()` tears
down in reverse through one `AsyncExitStack`: the bus, the reply reader, the relay, the
producers (each flush bounded by `close_timeout_ms`), the store (after the late
acknowledgements of that flush are written). What it wires inside, and an application can
therefore not forget: failed publishes are recorded in the store and wake the relay, and a
record whose publish is still in flight is held back by the relay until its outcome is known.

Brokers that do not answer do not stop the start-up: producers connect in the background and
publishes wait (within their deadline) or fail over to the store. Brokers that refuse the
client (credentials, TLS trust, ACLs) raise `AccessRefused` from `start()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kafka_events import access as _access
from kafka_events.bus import Dispatched, EventBus
from kafka_events.config import (
    DEFAULT_POLICIES,
    KafkaConfig,
    Policy,
    ReplayConfig,
    ReplyConfig,
    check_policies,
)
from kafka_events.delivery import DeliveryService
from kafka_events.errors import ConfigurationError, PublisherStateError, RepliesUnavailable
from kafka_events.messages import OutgoingMessage
from kafka_events.metrics import Metrics
from kafka_events.producer.lifecycle import ManagedProducer, ProducerFactory, ProducerState
from kafka_events.producer.publish import KafkaPublisher, RetryHook
from kafka_events.receipts import DeliveryReceipt, QueuedReceipt
from kafka_events.replies import Reply, ReplyReader, RequestReply
from kafka_events.serialization import Serializer, to_message
from kafka_events.store.base import MessageStore
from kafka_events.store.relay import Relay
from kafka_events.store.sql import SqlStore
from kafka_events.supervision import TaskState

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)


class State(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class KafkaEvents:
    """Publishes events under named delivery policies, and never loses what it accepted."""

    def __init__(
        self,
        kafka: KafkaConfig | None = None,
        *,
        store: MessageStore,
        policies: Mapping[str, Policy] | None = None,
        default_policy: str | None = None,
        replay: ReplayConfig | None = None,
        replies: ReplyConfig | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        serializer: Serializer | None = None,
        check_access: bool = True,
        providers: Mapping[type, object] | None = None,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        """
        Args:
            kafka: the brokers and transport options (default: `KafkaConfig()`, a local broker).
            store: where failed and outbox messages are kept (`SqlStore`, `MemoryStore`).
            policies: delivery policies by name (default: `DEFAULT_POLICIES`).
            default_policy: used when `emit` names none (default: `replicated` if defined,
                else the first policy).
            replay: the relay (default: `ReplayConfig()`, on).
            replies: request-reply's topic and timeout; none: `request()` is unavailable.
            metrics: the Prometheus series to count into; none: unregistered series.
            tracer: an OpenTelemetry tracer; none: no spans and no trace headers.
            serializer: how typed events become bytes (default: JSON).
            check_access: at start, connect to each bootstrap server once to tell a refusal
                (raised) from an outage (tolerated).
            providers: what the event bus may inject into listeners, by type, besides
                `KafkaEvents` itself and its store.
            producer_factory: makes the aiokafka producers (tests).

        Raises:
            ConfigurationError: the policies do not fit (see `check_policies`).
        """
        self.kafka = kafka or KafkaConfig()
        chosen = dict(DEFAULT_POLICIES if policies is None else policies)
        try:
            check_policies(chosen, self.kafka.producer)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        if default_policy is not None and default_policy not in chosen:
            raise ConfigurationError(f"default_policy '{default_policy}' is not a policy")
        self.policies: Mapping[str, Policy] = chosen
        self.default_policy = default_policy or (
            "replicated" if "replicated" in chosen else next(iter(chosen))
        )
        self.store = store
        self.metrics = metrics or Metrics(None)
        self._serializer = serializer
        self._check_access = check_access
        self._replay = replay or ReplayConfig()
        self._replies = replies
        self._tracer = tracer
        self._producer_factory = producer_factory
        self._reply_consumer_factory: Callable[[], Any] | None = None  # tests
        self._should_retry: RetryHook | None = None
        self._state = State.NEW
        self._stack: AsyncExitStack | None = None
        self.bus = EventBus()
        self._extra_providers = dict(providers or {})
        self._build()

    def _build(self) -> None:
        """Make the producers, publishers, relay, delivery service and reply reader afresh
        (at construction, and again when started after a stop)."""
        self.producers = self._producers(self._producer_factory)
        by_key = {p.policy.producer_key(): p for p in self.producers}
        self.publishers: Mapping[str, KafkaPublisher] = {
            name: KafkaPublisher(
                self.kafka,
                policy,
                name=name,
                producer=by_key[policy.producer_key()],
                metrics=self.metrics,
                tracer=self._tracer,
                should_retry=self._should_retry,
            )
            for name, policy in self.policies.items()
        }
        self.relay = Relay(self.store, self.publishers, self._replay, metrics=self.metrics)
        self.delivery = DeliveryService(
            self.publishers,
            self.store,
            on_recorded=self.relay.wake,
            on_in_flight=self.relay.track,
            metrics=self.metrics,
        )
        replies = self._replies
        self.replies = (
            ReplyReader(
                self.kafka,
                replies,
                consumer_factory=self._reply_consumer_factory,
                metrics=self.metrics,
            )
            if replies is not None
            else None
        )
        self._requests = (
            RequestReply(self.delivery, self.replies, replies.timeout_ms)
            if self.replies is not None and replies is not None
            else None
        )
        self._providers: dict[type, object] = {
            KafkaEvents: self,
            MessageStore: self.store,
            DeliveryService: self.delivery,
            **self._extra_providers,
        }

    def _producers(self, factory: ProducerFactory | None) -> list[ManagedProducer]:
        """One producer per distinct producer configuration, named after its first policy."""
        groups: dict[tuple[object, ...], list[str]] = {}
        for name, policy in self.policies.items():
            groups.setdefault(policy.producer_key(), []).append(name)
        return [
            ManagedProducer(
                self.kafka,
                self.policies[names[0]],
                name=names[0],
                policies=names,
                metrics=self.metrics,
                producer_factory=factory,
            )
            for names in groups.values()
        ]

    @property
    def state(self) -> State:
        return self._state

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the store, start the producers, the relay and the reply reader.

        Raises:
            PublisherStateError: it is running already.
            AccessRefused: Kafka refused this client; everything started is stopped again.
            StoreError: the store cannot be opened.
        """
        if self._state is State.RUNNING:
            raise PublisherStateError("KafkaEvents is running already")
        if self._state is State.STOPPED:
            self._build()  # its clients are one-shot: new ones for this run
        self._state = State.RUNNING
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self._close_store)
            for producer in self.producers:
                stack.push_async_callback(producer.stop)
            # Concurrently: each step is bounded by connect_timeout_ms. Brokers that refuse us
            # stop the start-up; brokers that do not answer don't.
            checks = (
                [_access.check(self.kafka, client_id=self.kafka.producer.client_id)]
                if self._check_access
                else []
            )
            outcomes = await asyncio.gather(
                *checks, *(p.start() for p in self.producers), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    self._state = State.STOPPED
                    raise outcome
            if self._replay.enabled:
                self.relay.start()
                stack.push_async_callback(self.relay.stop)
            if self.replies is not None:
                self.replies.start()  # in the background: request() waits for it, emit() not
                stack.push_async_callback(self.replies.stop)
            self.bus.start(self._providers)
            stack.callback(self.bus.stop)
            self._stack = stack.pop_all()
        logger.info(
            "started: producers %s; relay %s",
            ", ".join(f"{p.name}={p.state.value}" for p in self.producers),
            "on" if self._replay.enabled else "off",
        )

    async def stop(self) -> None:
        """Stop everything in reverse, each step bounded. Safe to call more than once."""
        stack, self._stack = self._stack, None
        self._state = State.STOPPED
        if stack is not None:
            await stack.aclose()

    async def _close_store(self) -> None:
        await self.relay.settle_late()  # late acknowledgements from the producers' last flush
        await self.store.close()

    async def ready(self) -> bool:
        """Whether every producer is connected, a broker answers now (bounded), and nothing
        of `problems()` stands in the way."""
        if self.problems():
            return False
        return await self.producers[0].ping()

    def problems(self) -> list[str]:
        """What keeps this instance from doing all it is configured for, now (empty: nothing).

        A producer that is not connected; the reply reader, when request-reply is configured,
        not reading (connecting, or restarting after it died); the relay restarting, or its
        store failing to take what Kafka acknowledged.
        """
        found = [
            f"producer {p.name}: {p.state.value}"
            for p in self.producers
            if p.state is not ProducerState.READY
        ]
        if self.replies is not None and not self.replies.ready:
            state = self.replies.state
            doing = "connecting" if state is TaskState.RUNNING else state.value
            found.append(f"reply reader: {doing}")
        if self._replay.enabled:
            if self.relay.state is TaskState.RESTARTING:
                found.append("relay: restarting")
            if self.relay.store_failing:
                found.append("relay: the store cannot be written")
        return found

    # -- publishing --------------------------------------------------------------------------

    def publisher(self, policy: str | None = None) -> KafkaPublisher:
        """The publisher of `policy` (default: the default policy).

        Raises:
            KeyError: no such policy.
        """
        return self.publishers[policy or self.default_policy]

    def message(
        self, value: object, *, topic: str | None = None, correlation_id: str | None = None
    ) -> OutgoingMessage:
        """The record an event becomes (an `OutgoingMessage` is returned as it is)."""
        if isinstance(value, OutgoingMessage):
            return value
        return to_message(
            value, topic=topic, serializer=self._serializer, correlation_id=correlation_id
        )

    async def emit(
        self,
        value: object,
        *,
        policy: str | None = None,
        topic: str | None = None,
        correlation_id: str | None = None,
    ) -> DeliveryReceipt | QueuedReceipt:
        """Publish an event (a typed event, or an `OutgoingMessage`) under `policy`.

        Returns:
            The broker's receipt; a `QueuedReceipt` for an outbox policy.

        Raises:
            EncodingError: the event cannot be encoded; nothing sent, nothing kept.
            PublishError: not delivered; `record_id` says where it is kept for replay (None:
                not kept), `sent` whether a broker may still write it.
            KeyError: no such policy.
        """
        message = self.message(value, topic=topic, correlation_id=correlation_id)
        return await self.delivery.emit(message, policy=policy or self.default_policy)

    async def request(
        self,
        value: object,
        *,
        policy: str | None = None,
        topic: str | None = None,
        correlation_id: str | None = None,
        timeout_ms: int | None = None,
    ) -> tuple[DeliveryReceipt | QueuedReceipt, Reply]:
        """Publish a request and wait for the consumer's reply (request-reply).

        Raises:
            RepliesUnavailable: no reply topic configured, or it is not read yet; not sent.
            PublishError: the request was not published (recorded, as for `emit`).
            ReplyTimeout: published, but no reply within `timeout_ms` (default: the reply
                config's); it carries the receipt.
        """
        if self._requests is None:
            raise RepliesUnavailable("request-reply needs KafkaEvents(replies=ReplyConfig(...))")
        message = self.message(value, topic=topic, correlation_id=correlation_id)
        return await self._requests.send(
            message, policy=policy or self.default_policy, timeout_ms=timeout_ms
        )

    async def add_to_outbox(
        self,
        connection: AsyncConnection | AsyncSession,
        value: object,
        *,
        policy: str | None = None,
        topic: str | None = None,
        correlation_id: str | None = None,
    ) -> QueuedReceipt:
        """Store an event in the caller's own open database transaction: the outbox.

        It is committed with the caller's rows, or rolled back with them (then nothing is
        ever published); after the commit the relay publishes it under `policy`, and
        `store.find_event(event_id)` follows it. The store must be a `SqlStore` on the
        caller's database.

        Raises:
            ConfigurationError: the store is not a `SqlStore`.
            EncodingError: the event cannot be encoded; nothing was stored.
            KeyError: no such policy.
            SQLAlchemyError: the caller's database failed, as for the rest of its transaction.
        """
        if not isinstance(self.store, SqlStore):
            raise ConfigurationError(
                "an outbox in your transaction needs store=SqlStore(<your database URL>)"
            )
        chosen = policy or self.default_policy
        self.publishers[chosen]
        message = self.message(value, topic=topic, correlation_id=correlation_id)
        record_id = await self.store.add_to_outbox(
            connection, message, policy=chosen, on_commit=self.relay.wake
        )
        return QueuedReceipt(
            event_id=message.event_id, record_id=record_id, topic=message.topic, policy=chosen
        )

    async def publish_atomically(
        self, values: Sequence[object], *, policy: str, topic: str | None = None
    ) -> list[DeliveryReceipt]:
        """Publish events in one Kafka transaction (a policy with `transactional_id`).

        Raises:
            PublisherStateError: the policy is not transactional.
            PublishError: aborted, or its outcome unknown; nothing is recorded.
        """
        messages = [self.message(v, topic=topic) for v in values]
        return await self.publishers[policy].publish_atomically(messages)

    async def dispatch(self, event: object) -> Dispatched:
        """Run the event bus's listeners of `event` (see `EventBus.dispatch`)."""
        return await self.bus.dispatch(event)

    def __repr__(self) -> str:
        return (
            f"KafkaEvents({self.kafka.bootstrap_servers!r}, policies={list(self.policies)}, "
            f"state={self._state.value})"
        )
