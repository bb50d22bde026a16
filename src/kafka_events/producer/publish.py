"""Publishing under one named delivery policy: deadline, retries, key order, receipts.

Delivery contract of `KafkaPublisher.publish()`:
- It returns only once the broker acknowledged the message (acks=1/all), or once the message
  was handed to the socket layer (acks=0: the receipt says `confirmed=false`).
- It never takes longer than the policy's `delivery_timeout_ms`, waiting for a connection
  included. aiokafka retries retriable errors by itself (forever when idempotent); this
  deadline is what bounds it.
- Retriable errors that surface (no metadata, no leader, not enough replicas, a connection
  lost, a send stage not done within `attempt_timeout_ms`) are retried with kafkajs'
  schedule (`kafka_events._retry`), at most `retry.retries` times, the same event id each
  time. An attempt whose message is in flight is never abandoned for a new one: waiting on the
  same send beats sending twice. `should_retry(error)` can veto a retry.
- On failure it raises a `PublishError` whose `sent` says whether the message certainly never
  left the process (False) or may still be written (None: the deadline passed while the
  broker had it; then `in_flight` is a future of its late outcome). A message that is written
  after its deadline is logged with its offset.
- Cancelling `publish()` before the message was handed to aiokafka withdraws it; after that,
  aiokafka finishes sending it regardless.

Several policies may share one `ManagedProducer` (same producer options); each has its own
publisher. A publisher made without a producer owns one, and starts and stops it.

With tracing on (a `tracer` given), each publish is a PRODUCER span whose context its record
carries in `traceparent` (`kafka_events.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from opentelemetry.trace import Tracer
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from kafka_events import errors
from kafka_events._retry import KafkajsWait
from kafka_events.config import KafkaConfig, Policy
from kafka_events.messages import OutgoingMessage
from kafka_events.metrics import Metrics
from kafka_events.producer import acknowledgement
from kafka_events.producer.counting import PublishSeries
from kafka_events.producer.deadlines import Deadlines
from kafka_events.producer.lifecycle import ManagedProducer, ProducerFactory, ProducerState
from kafka_events.producer.ordering import KeyOrder
from kafka_events.producer.transactions import in_transaction
from kafka_events.receipts import DeliveryReceipt
from kafka_events.tracing import acknowledged, sending

logger = logging.getLogger(__name__)

RetryHook = Callable[[errors.PublishError], bool]

_T = TypeVar("_T")


class KafkaPublisher:
    """Publishes messages under one policy through a producer shared by every request."""

    def __init__(
        self,
        kafka: KafkaConfig,
        policy: Policy | None = None,
        *,
        name: str = "replicated",
        producer: ManagedProducer | None = None,
        producer_factory: ProducerFactory | None = None,
        metrics: Metrics | None = None,
        should_retry: RetryHook | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """
        Args:
            kafka: the brokers and transport options.
            policy: how to deliver (default: `Policy()`, acks=all and idempotent).
            name: the policy's name, in receipts, logs and metrics.
            producer: a producer shared with other policies; none: this publisher makes one
                of its own (with `producer_factory`, for tests) and starts and stops it.
            metrics: where to count; none: unregistered series.
            should_retry: may veto the retry of a retriable error.
            tracer: an OpenTelemetry tracer; none: no spans and no trace headers.
        """
        self._policy = policy or Policy()
        self.name = name
        self._metrics = metrics or Metrics(None)
        self._owns_producer = producer is None
        self._producer = producer or ManagedProducer(
            kafka, self._policy, name=name, metrics=self._metrics, producer_factory=producer_factory
        )
        self._should_retry = should_retry
        self._tracer = tracer
        self._key_order = KeyOrder(enabled=self._policy.ordered_per_key)
        self._counted = PublishSeries(self._metrics, name)
        # one loop timer each for every publish's deadline and every send stage's timeout
        self._deadlines = Deadlines(self._policy.delivery_timeout_ms / 1000)
        self._attempt_deadlines = Deadlines(self._policy.attempt_timeout_ms / 1000)

    @property
    def producer(self) -> ManagedProducer:
        return self._producer

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def state(self) -> ProducerState:
        return self._producer.state

    @property
    def awaiting_acknowledgement(self) -> int:
        """Publishes handed to the producer whose acknowledgement is still outstanding."""
        return self._counted.awaiting.value

    @property
    def traced(self) -> bool:
        """Whether publishes make spans and carry trace context (`kafka_events.tracing`)."""
        return self._tracer is not None

    @property
    def deadline_ms(self) -> int:
        return self._policy.delivery_timeout_ms

    @property
    def outbox(self) -> bool:
        """Whether messages of this policy go through the outbox (stored first)."""
        return self._policy.outbox

    async def start(self) -> None:
        """Start the producer, if this publisher owns it (see `ManagedProducer.start`)."""
        if self._owns_producer:
            await self._producer.start()

    async def stop(self) -> None:
        """Stop the producer, if this publisher owns it (see `ManagedProducer.stop`)."""
        if self._owns_producer:
            await self._producer.stop()

    async def ping(self) -> bool:
        return await self._producer.ping()

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Send one message and wait for the broker's acknowledgement, within the deadline.

        Every `PublishError` it raises says how many attempts were made.

        Returns:
            The receipt with the broker's offset metadata (unconfirmed for acks=0).

        Raises:
            PublisherStateError: used before `start()` or after `stop()`.
            RecordTooLarge: larger than `max_request_size` or the broker's limit; not sent.
            PublishRejected: a non-retriable broker error (authorisation, invalid topic...).
            BrokerUnavailable: retriable errors outlasted the retries.
            DeliveryTimeout: no acknowledgement within `delivery_timeout_ms`.
        """
        if self._tracer is None:
            (receipt,) = await self._counted.measured([message], self._publish(message))
            return receipt
        with sending(self._tracer, [message], policy=self.name) as (span, [traced]):
            (receipt,) = await self._counted.measured([traced], self._publish(traced))
            acknowledged(span, [receipt])
        return receipt

    def _check_started(self) -> None:
        if not self._producer.started:
            raise errors.PublisherStateError(
                f"publisher '{self.name}' is {self.state.value}; "
                "it is usable between the application's start-up and shutdown"
            )

    async def _publish(self, message: OutgoingMessage) -> list[DeliveryReceipt]:
        self._check_started()
        started = time.perf_counter()
        attempts = 0
        stage = ["queue"]  # the stage of the current attempt, for the timeout's message
        pending: list[asyncio.Future[Any] | None] = [None]  # aiokafka's future, once sent
        previous, done = self._key_order.join(message.key)
        try:
            with self._deadlines.scope():
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
            in_flight = pending[0]
            raise errors.DeliveryTimeout(
                f"not acknowledged within {self._policy.delivery_timeout_ms} ms "
                f"(attempt {attempts}, waiting to {stage[0]})",
                event_id=message.event_id,
                sent=errors.maybe_sent(stage[0]),
                attempts=attempts,
                in_flight=(
                    acknowledgement.late_receipt(
                        in_flight,
                        lambda metadata, ms: self._receipt(message, metadata, ms, attempts),
                        started,
                    )
                    if in_flight is not None and not in_flight.done()
                    else None
                ),
            ) from None
        except errors.PublishError as error:
            raise error.replace(attempts=attempts) from error.__cause__
        finally:
            self._key_order.leave(message.key, done, previous)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [self._receipt(message, metadata, elapsed_ms, attempts)]

    def _receipt(
        self, message: OutgoingMessage, metadata: Any, elapsed_ms: float, attempts: int
    ) -> DeliveryReceipt:
        return acknowledgement.receipt(
            self._policy, self.name, message, metadata, elapsed_ms, attempts
        )

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
            return await self._counted.measured(messages, self._publish_atomically(messages))
        with sending(self._tracer, messages, policy=self.name) as (span, traced):
            receipts = await self._counted.measured(traced, self._publish_atomically(traced))
            acknowledged(span, receipts)
        return receipts

    async def _publish_atomically(
        self, messages: Sequence[OutgoingMessage]
    ) -> list[DeliveryReceipt]:
        if self._policy.transactional_id is None:
            raise errors.PublisherStateError(
                f"publisher '{self.name}' has no `transactional_id`; give its policy one"
            )
        if not self._producer.started:
            raise errors.PublisherStateError(f"publisher '{self.name}' is {self.state.value}")
        if not messages:
            return []
        first = messages[0]
        started = time.perf_counter()
        stage = "connect"
        try:
            async with asyncio.timeout(self._policy.delivery_timeout_ms / 1000):
                producer = await self._before_sending(
                    self._producer.wait_ready(first.event_id), first
                )
                stage = "transaction"
                metadata = await in_transaction(
                    self._producer,
                    producer,
                    messages,
                    send=self._send,
                    acknowledge=self._acknowledgement,
                )
        except TimeoutError:
            raise errors.DeliveryTimeout(
                f"transaction not committed within {self._policy.delivery_timeout_ms} ms",
                event_id=first.event_id,
                sent=errors.maybe_sent(stage),
            ) from None
        except KafkaError as exc:
            raise errors.from_kafka_error(exc, event_id=first.event_id, stage=stage) from exc
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [
            self._receipt(m, md, elapsed_ms, 1) for m, md in zip(messages, metadata, strict=True)
        ]

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
            self._metrics.publish_retries.labels(message.topic, self.name, cause).inc()
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
            producer = self._producer.current
            if producer is None:
                # Only a wait needs the attempt timeout (a timeout scope costs a timer).
                producer = await self._before_sending(
                    self._producer.wait_ready(message.event_id), message
                )
            if self._policy.transactional_id is not None:
                stage[0] = "transaction"
                # One message, one transaction; serialised: a producer has one open at a time.
                (metadata,) = await in_transaction(
                    self._producer,
                    producer,
                    [message],
                    send=self._send,
                    acknowledge=self._acknowledgement,
                )
                return metadata
            stage[0] = "enqueue"
            future = await self._before_sending(self._send(producer, message), message)
            stage[0] = "acknowledge"
            pending[0] = future
            return await self._acknowledgement(future, message)
        except errors.PublishError:
            raise
        except KafkaError as exc:
            raise errors.from_kafka_error(exc, event_id=message.event_id, stage=stage[0]) from exc

    async def _before_sending(self, step: Awaitable[_T], message: OutgoingMessage) -> _T:
        """Run a step that comes before the message leaves the process, within the attempt timeout.

        Cancelling these steps withdraws the message, so a slow one can safely be retried.
        """
        try:
            with self._attempt_deadlines.scope() as scope:
                return await step
        except TimeoutError:
            if not scope.expired():
                raise  # the overall deadline, not ours
            raise errors.BrokerUnavailable(
                f"no broker ready within {self._policy.attempt_timeout_ms} ms",
                event_id=message.event_id,
                cause="AttemptTimeout",
            ) from None

    @staticmethod
    async def _send(producer: Any, message: OutgoingMessage) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
            message.topic, message.value, key=message.key, headers=list(message.headers)
        )
        return future

    async def _acknowledgement(self, future: asyncio.Future[Any], message: OutgoingMessage) -> Any:
        awaiting = self._counted.awaiting
        awaiting.inc()
        try:
            # shield: if our deadline fires, aiokafka's own future must stay intact.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(acknowledgement.late_outcome_logger(message))
            raise
        finally:
            awaiting.dec()
