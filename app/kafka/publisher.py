"""A typed facade over one long-lived `AIOKafkaProducer`, with an explicit lifecycle.

Lifecycle::

    NEW --start()--> CONNECTING --connected--> READY --stop()--> STOPPING --> STOPPED
                         ^   (background reconnect, backoff capped)          |
                         +-- a broken producer (transaction in doubt) -------+ (only READY)

`start()` makes one bounded connection attempt. If no broker answers, the application still
starts: the publisher keeps trying in the background (capped exponential backoff with jitter,
each attempt bounded by `connect_timeout_ms`) until it connects or is stopped, and reports not
ready meanwhile. If the brokers refuse it (an authorisation failure: retrying cannot help),
`start()` raises instead.

One publisher serves one delivery policy (acks, idempotence, deadline, retries).

Delivery contract of `publish()`:
- It returns only once the broker acknowledged the message (acks=1/all), or once the message
  was handed to the socket layer (acks=0: the receipt says `confirmed=false`).
- It never takes longer than the policy's `delivery_timeout_ms`, waiting for a connection
  included. aiokafka retries retriable errors by itself (forever when idempotent); this
  deadline is what bounds it.
- Retriable errors that surface (no metadata, no leader, not enough replicas, a connection
  lost, a send stage not done within `attempt_timeout_ms`) are retried with kafkajs'
  schedule (`app.kafka.retry`), at most `retry.retries` times, the same event id each time.
  An attempt whose message is in flight is never abandoned for a new one: waiting on the
  same send beats sending twice. `should_retry(error)` can veto a retry.
- On failure it raises a `PublishError` whose `sent` says whether the message certainly never
  left the process (False) or may still be written (None: the deadline passed while the
  broker had it). A message that is written after its deadline is logged with its offset.
- Cancelling `publish()` before the message was handed to aiokafka withdraws it; after that,
  aiokafka finishes sending it regardless.

`stop()` flushes what is buffered for at most `close_timeout_ms`, fails what is left (its
publishers get an error, nothing hangs) and closes the connections.

With tracing on (a `tracer` given), each publish is a PRODUCER span whose context its record
carries in `traceparent` (`app.kafka.tracing`, which also says why no instrumentation library).

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
    ProducerFenced,
)
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]
from opentelemetry.trace import Tracer
from prometheus_client import Counter, Gauge, Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from app import metrics
from app.config import KafkaSettings, PolicyName
from app.kafka import access, errors, options
from app.kafka.messages import OutgoingMessage
from app.kafka.receipts import DeliveryReceipt, TimestampType
from app.kafka.retry import KafkajsWait, connect_until_stopped
from app.kafka.tracing import acknowledged, sending

logger = logging.getLogger(__name__)

ProducerFactory = Callable[[], Any]
RetryHook = Callable[[errors.PublishError], bool]

_T = TypeVar("_T")

_TIMESTAMP_TYPES: dict[int, TimestampType] = {0: "CreateTime", 1: "LogAppendTime"}


class PublisherState(StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    READY = "ready"
    FENCED = "fenced"  # another process took over our transactional id: we must not publish
    STOPPING = "stopping"
    STOPPED = "stopped"


class KafkaPublisher:
    """Publishes messages through one producer shared by every request of the process."""

    def __init__(
        self,
        settings: KafkaSettings,
        policy: PolicyName = PolicyName.REPLICATED,
        *,
        producer_factory: ProducerFactory | None = None,
        should_retry: RetryHook | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._settings = settings
        self._transport = settings.producer
        self._policy = settings.policies.get(policy)
        self.policy = policy
        self.name = policy.value
        self._factory: ProducerFactory = producer_factory or (
            lambda: AIOKafkaProducer(**options.producer_options(settings, policy))
        )
        self._should_retry = should_retry
        self._tracer = tracer  # None: tracing off, no span and no trace headers
        self._state = PublisherState.NEW
        self._producer: Any = None
        self._ready = asyncio.Event()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._connect_error: BaseException | None = None  # of the last failed attempt
        # One transaction at a time per transactional producer (aiokafka's rule).
        self._transaction_lock = asyncio.Lock()
        self._awaiting_ack = 0
        self._closing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # key -> the future that ends the latest publish of that key (ordered_per_key)
        self._key_tails: dict[bytes, asyncio.Future[None]] = {}
        # (topic, outcome) -> this publisher's series of a successful publish, looked up once:
        # prometheus-client's labels() takes a lock and rebuilds the label tuple on every call
        self._outcome_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    @property
    def state(self) -> PublisherState:
        return self._state

    def _enter(self, state: PublisherState) -> None:
        self._state = state
        metrics.PRODUCER_READY.labels(self.name).set(1 if state is PublisherState.READY else 0)

    @property
    def awaiting_acknowledgement(self) -> int:
        """Publishes handed to the producer whose acknowledgement is still outstanding."""
        return self._awaiting_ack

    @property
    def traced(self) -> bool:
        """Whether publishes make spans and carry trace context (`app.kafka.tracing`)."""
        return self._tracer is not None

    @property
    def deadline_ms(self) -> int:
        return self._policy.delivery_timeout_ms

    @property
    def outbox(self) -> bool:
        """Whether messages of this policy go through the outbox (stored first)."""
        return self._policy.outbox

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect once (bounded); on failure keep connecting in the background.

        Raises:
            PublisherStateError: if the publisher was started before.
            AccessRefused: the brokers refused this client (e.g. it may not use its
                transactional id); the publisher is stopped.
        """
        if self._state is not PublisherState.NEW:
            raise errors.PublisherStateError(f"publisher '{self.name}' was already started")
        self._enter(PublisherState.CONNECTING)
        if not await self._connect_once():
            error = self._connect_error
            refused = access.refusal(error, self._settings.security) if error else None
            if refused is not None:
                self._state = PublisherState.STOPPED
                raise refused
            logger.warning(
                "publisher %s: no broker reachable; retrying in the background", self.name
            )
            self._reconnect_task = asyncio.create_task(
                self._reconnect(), name=f"kafka-reconnect-{self.name}"
            )

    async def stop(self) -> None:
        """Flush (bounded by `close_timeout_ms`) and close. Safe to call more than once."""
        if self._state in (PublisherState.STOPPING, PublisherState.STOPPED):
            return
        previous = self._state
        self._enter(PublisherState.STOPPING)
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
        self._enter(PublisherState.STOPPED)
        if previous is not PublisherState.NEW:
            logger.info("publisher %s stopped", self.name)

    async def _connect_once(self) -> bool:
        if self._stopping.is_set():
            return True  # nothing more to connect: the publisher is stopping
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
        if self._state is not PublisherState.CONNECTING:  # stopped while connecting
            await self._close(producer, flush=False)
            return True
        self._producer = producer
        self._enter(PublisherState.READY)
        self._ready.set()
        logger.info(
            "publisher %s connected (acks=%s, idempotent=%s, deadline %d ms)",
            self.name,
            self._policy.acks.value,
            self._policy.enable_idempotence,
            self._policy.delivery_timeout_ms,
        )
        return True

    async def _reconnect(self) -> None:
        # Bounded per attempt (connect_timeout_ms); runs only while the app runs and stops with it.
        await connect_until_stopped(
            self._connect_once, self._stopping, self._transport.reconnect_backoff_max_ms
        )

    def _fence(self, producer: Any) -> None:
        """A newer producer owns our transactional id: stop for good (a zombie must not come
        back and fence the newer one in turn). Publishes are refused from now on."""
        if self._producer is not producer:
            return
        self._producer = None
        self._enter(PublisherState.FENCED)
        self._ready.set()
        logger.error(
            "publisher %s fenced: another process uses transactional_id %r; not publishing",
            self.name,
            self._policy.transactional_id,
        )
        self._closing = asyncio.create_task(
            self._close(producer, flush=False), name=f"kafka-close-{self.name}"
        )

    def _recycle(self, producer: Any) -> None:
        """Replace a producer whose state is in doubt (e.g. a transaction that failed).

        It is taken out of use at once (the next publish waits for its replacement), then
        closed and replaced in the background.
        """
        if self._producer is not producer or self._state is not PublisherState.READY:
            return
        self._producer = None
        self._ready.clear()
        self._enter(PublisherState.CONNECTING)
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

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Send one message and wait for the broker's acknowledgement, within the deadline.

        Returns:
            The receipt with the broker's offset metadata (unconfirmed for acks=0).

        Raises:
            PublisherStateError: used before `start()` or after `stop()`.
            RecordTooLarge: larger than `max_request_size` or the broker's limit; not sent.
            PublishRejected: a non-retriable broker error (authorisation, invalid topic...).
            BrokerUnavailable: retriable errors outlasted the retries.
            DeliveryTimeout: no acknowledgement within `delivery_timeout_ms`.
            Every PublishError says how many attempts were made.
        """
        if self._tracer is None:
            (receipt,) = await self._measured([message], self._publish(message))
            return receipt
        with sending(self._tracer, [message], policy=self.name) as (span, [traced]):
            (receipt,) = await self._measured([traced], self._publish(traced))
            acknowledged(span, [receipt])
        return receipt

    async def _measured(
        self, messages: Sequence[OutgoingMessage], publishing: Awaitable[list[DeliveryReceipt]]
    ) -> list[DeliveryReceipt]:
        """Await `publishing` of `messages`, counting each message's outcome and latency."""
        in_flight = self._in_flight
        in_flight.inc(len(messages))
        try:
            receipts = await publishing
        except errors.PublishError as error:
            for message in messages:
                metrics.PUBLISHED.labels(message.topic, self.name, error.kind).inc()
            raise
        finally:
            in_flight.dec(len(messages))
        for receipt in receipts:
            outcome = "delivered" if receipt.confirmed else "unconfirmed"
            published, duration = self._series(receipt.topic, outcome)
            published.inc()
            duration.observe(receipt.elapsed_ms / 1000)
        return receipts

    def _series(self, topic: str, outcome: str) -> tuple[Counter, Histogram]:
        """The publish counter of `outcome` and the latency histogram, for `topic`."""
        series = self._outcome_series.get((topic, outcome))
        if series is None:
            series = self._outcome_series[topic, outcome] = (
                metrics.PUBLISHED.labels(topic, self.name, outcome),
                metrics.PUBLISH_DURATION.labels(topic, self.name),
            )
        return series

    @functools.cached_property
    def _in_flight(self) -> Gauge:
        return metrics.PUBLISH_IN_FLIGHT.labels(self.name)

    @functools.cached_property
    def _awaiting(self) -> Gauge:
        return metrics.AWAITING_ACK.labels(self.name)

    async def _publish(self, message: OutgoingMessage) -> list[DeliveryReceipt]:
        if self._state in (PublisherState.NEW, PublisherState.STOPPED):
            raise errors.PublisherStateError(
                f"publisher '{self.name}' is {self._state.value}; "
                "it is usable between the application's start-up and shutdown"
            )
        started = time.perf_counter()
        attempts = 0
        stage = ["queue"]  # the stage of the current attempt, for the timeout's message
        pending: list[asyncio.Future[Any] | None] = [None]  # aiokafka's future, once sent
        previous, done = self._join_key_queue(message.key)
        try:
            async with asyncio.timeout(self._policy.delivery_timeout_ms / 1000):
                if previous is not None:
                    await asyncio.shield(previous)
                failure: errors.PublishError | None = None
                try:
                    attempts += 1
                    metadata = await self._attempt(message, stage, pending)
                except errors.PublishError as failed:
                    failure = failed
                if failure is not None:
                    # The first attempt runs without tenacity: its retry state costs as much
                    # CPU as the rest of a publish, and leaves reference cycles for the garbage
                    # collector. After a failure tenacity takes over, starting from that
                    # failure, so whether and when to retry is decided as for any attempt.
                    replay = [failure]
                    async for attempt in self._retrying(message):
                        with attempt:
                            if replay:
                                raise replay.pop()
                            attempts += 1
                            metadata = await self._attempt(message, stage, pending)
        except TimeoutError:
            error = errors.DeliveryTimeout(
                f"not acknowledged within {self._policy.delivery_timeout_ms} ms "
                f"(attempt {attempts}, waiting to {stage[0]})",
                event_id=message.event_id,
                sent=_maybe_sent(stage[0]),
                attempts=attempts,
            )
            if pending[0] is not None and not pending[0].done():
                error.in_flight = self._late_receipt(pending[0], message, started, attempts)
            raise error from None
        except errors.PublishError as error:
            error.attempts = attempts
            raise
        finally:
            self._leave_key_queue(message.key, done, previous)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [self._receipt(message, metadata, elapsed_ms, attempts)]

    async def publish_atomically(
        self, messages: Sequence[OutgoingMessage]
    ) -> list[DeliveryReceipt]:
        """Publish `messages` in one Kafka transaction: all are committed, or none.

        Needs a policy with `transactional_id` (one per process: a second process using the
        same id fences this one, whose next commit then fails). A `read_committed` consumer
        sees every message of the transaction or none. One attempt, bounded by the policy's
        deadline; nothing is recorded on failure (a replay message by message would not be
        atomic): the caller gets the error and decides.

        Raises:
            PublisherStateError: outside the publisher's lifetime, or not transactional.
            PublishError: the transaction was aborted (or its outcome is unknown:
                `sent=None`); `event_id` is the first message's.
        """
        if self._tracer is None or not messages:
            return await self._measured(messages, self._publish_atomically(messages))
        with sending(self._tracer, messages, policy=self.name) as (span, traced):
            receipts = await self._measured(traced, self._publish_atomically(traced))
            acknowledged(span, receipts)
        return receipts

    async def _publish_atomically(
        self, messages: Sequence[OutgoingMessage]
    ) -> list[DeliveryReceipt]:
        if self._policy.transactional_id is None:
            raise errors.PublisherStateError(
                f"publisher '{self.name}' has no transactional_id; set "
                f"KAFKA__POLICIES__{self.name.upper()}__TRANSACTIONAL_ID"
            )
        if self._state in (PublisherState.NEW, PublisherState.STOPPED):
            raise errors.PublisherStateError(f"publisher '{self.name}' is {self._state.value}")
        if not messages:
            return []
        first = messages[0]
        started = time.perf_counter()
        stage = "connect"
        try:
            async with asyncio.timeout(self._policy.delivery_timeout_ms / 1000):
                producer = await self._before_sending(self._wait_ready(first), first)
                stage = "transaction"
                metadata = await self._transaction(producer, messages)
        except TimeoutError:
            raise errors.DeliveryTimeout(
                f"transaction not committed within {self._policy.delivery_timeout_ms} ms",
                event_id=first.event_id,
                sent=_maybe_sent(stage),
            ) from None
        except KafkaError as exc:
            raise _classify(exc, first, stage) from exc
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [
            self._receipt(m, md, elapsed_ms, 1) for m, md in zip(messages, metadata, strict=True)
        ]

    async def _transaction(self, producer: Any, messages: Sequence[OutgoingMessage]) -> list[Any]:
        async with self._transaction_lock:
            try:
                await producer.begin_transaction()
                futures = [await self._send(producer, m) for m in messages]
                metadata = [
                    await self._acknowledgement(f, m)
                    for f, m in zip(futures, messages, strict=True)
                ]
                await producer.commit_transaction()
            except ProducerFenced:
                self._fence(producer)
                raise
            except BaseException:
                # In doubt (an abort could wait on brokers without end): drop this producer; a
                # fresh one with the same id fences it and the coordinator aborts the rest.
                self._recycle(producer)
                raise
            return metadata

    def _join_key_queue(
        self, key: bytes | None
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None] | None]:
        """With `ordered_per_key`, queue behind the previous publish of `key` until it ends.

        aiokafka keeps one batch per partition in flight and retries it before the next, so
        what it is handed stays in order. But when a message fails and we retry it (topic
        metadata missing, a request timeout, NOT_ENOUGH_REPLICAS without idempotence), later
        messages of its key handed over meanwhile would overtake it. One publish per key at a
        time prevents that, at the cost of one round trip per message for a busy key.
        """
        if key is None or not self._policy.ordered_per_key:
            return None, None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous = self._key_tails.get(key)
        self._key_tails[key] = done
        return previous, done

    def _leave_key_queue(
        self,
        key: bytes | None,
        done: asyncio.Future[None] | None,
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Let the next publish of `key` go: at once, or, if this one gave up while still
        queued (its deadline), once the one before it ends, so nobody overtakes that."""
        if key is None or done is None:
            return

        def release(_: object = None) -> None:
            if not done.done():
                done.set_result(None)
            if self._key_tails.get(key) is done:
                del self._key_tails[key]

        if previous is not None and not previous.done():
            previous.add_done_callback(release)
        else:
            release()

    def _retrying(self, message: OutgoingMessage) -> AsyncRetrying:
        """The retry loop of one publish: at most `retry.retries` retries, kafkajs' waits."""
        return AsyncRetrying(
            stop=stop_after_attempt(self._policy.retry.retries + 1),
            wait=KafkajsWait(self._policy.retry),
            retry=retry_if_exception(self._retriable),
            before_sleep=self._log_retry(message),
            reraise=True,
        )

    def _retriable(self, error: BaseException) -> bool:
        if not isinstance(error, errors.PublishError) or not error.retriable:
            return False
        return self._should_retry(error) if self._should_retry is not None else True

    def _log_retry(self, message: OutgoingMessage) -> Callable[[RetryCallState], None]:
        def log(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            cause = getattr(error, "cause", type(error).__name__)
            metrics.PUBLISH_RETRIES.labels(message.topic, self.name, cause).inc()
            logger.warning(
                "event %s: attempt %d failed (%s); retrying in %.0f ms",
                message.event_id,
                state.attempt_number,
                cause,
                state.upcoming_sleep * 1000,
            )

        return log

    async def _attempt(
        self, message: OutgoingMessage, stage: list[str], pending: list[asyncio.Future[Any] | None]
    ) -> Any:
        """One attempt. Raises PublishError; TimeoutError only from the overall deadline."""
        stage[0] = "connect"
        try:
            producer = self._producer
            if self._state is not PublisherState.READY or producer is None:
                # Only a wait needs the attempt timeout (a timeout scope costs a timer).
                producer = await self._before_sending(self._wait_ready(message), message)
            if self._policy.transactional_id is not None:
                stage[0] = "transaction"
                return await self._publish_in_transaction(producer, message)
            stage[0] = "enqueue"
            future = await self._before_sending(self._send(producer, message), message)
            stage[0] = "acknowledge"
            pending[0] = future
            return await self._acknowledgement(future, message)
        except errors.PublishError:
            raise
        except KafkaError as exc:
            raise _classify(exc, message, stage[0]) from exc

    async def _before_sending(self, step: Awaitable[_T], message: OutgoingMessage) -> _T:
        """Run a step that comes before the message leaves the process, within the attempt timeout.

        Cancelling these steps withdraws the message, so a slow one can safely be retried.
        """
        try:
            async with asyncio.timeout(self._policy.attempt_timeout_ms / 1000) as scope:
                return await step
        except TimeoutError:
            if not scope.expired():
                raise  # the overall deadline, not ours
            raise errors.BrokerUnavailable(
                f"no broker ready within {self._policy.attempt_timeout_ms} ms",
                event_id=message.event_id,
                cause="AttemptTimeout",
            ) from None

    async def _wait_ready(self, message: OutgoingMessage) -> Any:
        if self._state is PublisherState.FENCED:
            raise errors.PublishRejected(
                f"publisher '{self.name}' was fenced: another process uses transactional_id "
                f"{self._policy.transactional_id!r}",
                event_id=message.event_id,
                cause="ProducerFenced",
            )
        if self._state is not PublisherState.READY:
            await self._ready.wait()
        if self._state is not PublisherState.READY or self._producer is None:
            raise errors.BrokerUnavailable(
                f"publisher '{self.name}' is {self._state.value}", event_id=message.event_id
            )
        return self._producer

    @staticmethod
    async def _send(producer: Any, message: OutgoingMessage) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
            message.topic, message.value, key=message.key, headers=list(message.headers)
        )
        return future

    async def _acknowledgement(self, future: asyncio.Future[Any], message: OutgoingMessage) -> Any:
        self._awaiting_ack += 1
        awaiting = self._awaiting
        awaiting.inc()
        try:
            # shield: if our deadline fires, aiokafka's own future must stay intact.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._late_outcome_logger(message))
            raise
        finally:
            self._awaiting_ack -= 1
            awaiting.dec()

    async def _publish_in_transaction(self, producer: Any, message: OutgoingMessage) -> Any:
        """One message, one transaction; serialised, since a producer has one open at a time."""
        (metadata,) = await self._transaction(producer, [message])
        return metadata

    def _late_receipt(
        self, future: asyncio.Future[Any], message: OutgoingMessage, started: float, attempts: int
    ) -> asyncio.Future[DeliveryReceipt]:
        """A future of the receipt of a message acknowledged after its deadline (or its error)."""
        late: asyncio.Future[DeliveryReceipt] = asyncio.get_running_loop().create_future()

        def resolve(done: asyncio.Future[Any]) -> None:
            if late.done():
                return
            if done.cancelled():
                late.cancel()
            elif done.exception() is not None:
                late.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                elapsed_ms = (time.perf_counter() - started) * 1000
                late.set_result(self._receipt(message, done.result(), elapsed_ms, attempts))

        future.add_done_callback(resolve)
        late.add_done_callback(_consume_exception)
        return late

    def _late_outcome_logger(
        self, message: OutgoingMessage
    ) -> Callable[[asyncio.Future[Any]], None]:
        def log_outcome(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:
                logger.warning(
                    "event %s: failed after its deadline: %s", message.event_id, type(exc).__name__
                )
                return
            metadata = future.result()
            logger.warning(
                "event %s: acknowledged after its deadline at %s[%s]@%s",
                message.event_id,
                message.topic,
                getattr(metadata, "partition", "?"),
                getattr(metadata, "offset", "?"),
            )

        return log_outcome

    def _receipt(
        self, message: OutgoingMessage, metadata: Any, elapsed_ms: float, attempts: int
    ) -> DeliveryReceipt:
        common: dict[str, Any] = {
            "event_id": message.event_id,
            "topic": message.topic,
            "acks": self._policy.acks.value,
            "idempotent": self._policy.enable_idempotence,
            "policy": self.policy.value,
            "attempts": attempts,
            "elapsed_ms": round(elapsed_ms, 3),
            "deadline_ms": self._policy.delivery_timeout_ms,
        }
        if metadata is None:  # acks=0: the broker never answers
            return DeliveryReceipt(
                partition=None,
                offset=None,
                timestamp=None,
                timestamp_type=None,
                log_start_offset=None,
                confirmed=False,
                **common,
            )
        log_start = metadata.log_start_offset
        return DeliveryReceipt(
            partition=metadata.partition,
            offset=metadata.offset,
            timestamp=metadata.timestamp if metadata.timestamp >= 0 else None,
            timestamp_type=_TIMESTAMP_TYPES.get(metadata.timestamp_type),
            log_start_offset=log_start if log_start is not None and log_start >= 0 else None,
            confirmed=True,
            **common,
        )

    # -- health ------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when connected and a broker answered a metadata request within the ready timeout."""
        producer = self._producer
        if self._state is not PublisherState.READY or producer is None:
            return False
        client = producer.client
        try:
            async with asyncio.timeout(self._settings.ready_timeout_ms / 1000):
                node_id = client.get_random_node()
                if node_id is None:
                    return False
                # An empty topic list asks for brokers only: cheap on clusters with many topics.
                await client.send(node_id, MetadataRequest([]))
        except (KafkaError, OSError, TimeoutError):
            return False
        return True


def _classify(exc: KafkaError, message: OutgoingMessage, stage: str) -> errors.PublishError:
    cause = type(exc).__name__
    if isinstance(exc, MessageSizeTooLargeError):
        return errors.RecordTooLarge(
            "the message is larger than the producer's or the broker's limit",
            event_id=message.event_id,
            cause=cause,
        )
    if isinstance(exc, ProducerClosed):
        error: errors.PublishError = errors.BrokerUnavailable(
            "the publisher is stopping", event_id=message.event_id, sent=_maybe_sent(stage)
        )
        error.retriable = False
        return error
    # KafkaTimeoutError: no metadata for the topic or the buffer stayed full: try again later.
    if isinstance(exc, KafkaTimeoutError) or getattr(exc, "retriable", False):
        return errors.BrokerUnavailable(
            f"broker error: {cause}",
            event_id=message.event_id,
            sent=_maybe_sent(stage),
            cause=cause,
        )
    return errors.PublishRejected(
        f"rejected by the broker: {cause}", event_id=message.event_id, cause=cause
    )


_abandoned: set[asyncio.Task[Any]] = set()  # keeps abandoned close steps referenced


async def _within(step: Awaitable[Any], timeout_s: float) -> bool:
    """Run `step` as a task; True if it ended without error within `timeout_s`.

    An error is logged; a step that overruns is cancelled but not awaited.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()  # asked, not awaited: see KafkaPublisher._close
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
        return False
    if task.cancelled():
        return False
    if task.exception() is not None:
        logger.warning("producer close step failed: %r", task.exception())
        return False
    return True


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a late outcome's error as seen: nobody may be waiting for it (logged elsewhere)."""
    if not future.cancelled():
        future.exception()


def _maybe_sent(stage: str) -> bool | None:
    """False when the message certainly never left the process, None when it may have."""
    return None if stage in ("acknowledge", "transaction") else False
