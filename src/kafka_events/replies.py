"""Request-reply over Kafka: publish a request, wait (bounded) for the consumer's answer.

The wire contract, shared with the consumers (and with NestJS's and Spring's request-reply):

- the request carries headers `kafka_replyTopic` (UTF-8 topic name) and `kafka_correlationId`
  (opaque bytes, unique per request);
- the reply is published to that topic with the same `kafka_correlationId` header (and as its
  key), and a JSON value `{"event_id", "status", "detail", "handled_at"}`.

Routing replies to waiters: every API instance reads *every* partition of the reply topic,
without a consumer group, from the end, and keeps only replies whose correlation id one of its
own requests is waiting for; the others are dropped. So no instance can take another's reply
(nothing is consumed away from anyone), a late reply for a request that already timed out is
dropped safely, and instances need no partition assignment or topic of their own. The cost:
each instance reads the replies of all (fine for tens of instances; beyond that, a reply
partition per instance as Spring's ReplyingKafkaTemplate does).

The reader positions itself at the end of every partition *before* it reports ready, so a
reply cannot arrive before the reader looks.

No reply record stops the reader: one that cannot be decoded (a header key that is not UTF-8)
is skipped by offset (`kafka_events.consumer.fetching`), one whose value is not a reply's JSON
object fails only the request waiting for it; both are logged with topic, partition and
offset and counted in `kafka_events_replies_unusable_total`. The reader runs under a
`Supervisor`: if it dies all the same, `ready` is false (`request()` answers
`RepliesUnavailable`, readiness probes say so), it is logged and it starts again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]

from kafka_events import options
from kafka_events._retry import connect_until_stopped
from kafka_events.config import KafkaConfig, ReplyConfig
from kafka_events.consumer import fetching, records
from kafka_events.delivery import DeliveryService
from kafka_events.errors import MalformedReply, RepliesUnavailable, ReplyTimeout
from kafka_events.messages import OutgoingMessage
from kafka_events.metrics import Metrics
from kafka_events.receipts import DeliveryReceipt, QueuedReceipt
from kafka_events.supervision import Supervisor, TaskState

logger = logging.getLogger(__name__)

# the request-reply headers, named once for both sides (`kafka_events.consumer.records`)
REPLY_TOPIC_HEADER = records.REPLY_TOPIC
CORRELATION_HEADER = records.CORRELATION_ID
_POLL_MS = 500


@dataclass(frozen=True, slots=True)
class Reply:
    """The consumer's answer to one request."""

    event_id: str | None
    status: str
    detail: str | None
    handled_at: datetime | None
    partition: int
    offset: int


class ReplyReader:
    """Reads the reply topic and hands each reply to the request waiting for it."""

    def __init__(
        self,
        kafka: KafkaConfig,
        settings: ReplyConfig,
        *,
        consumer_factory: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._consumer_factory = consumer_factory or self._new_consumer
        self._metrics = metrics or Metrics(None)
        self._consumer: Any = None
        self._waiters: dict[bytes, asyncio.Future[Reply]] = {}
        self._supervisor = Supervisor(
            "the reply reader",
            self._run,
            backoff_max_ms=kafka.producer.reconnect_backoff_max_ms,
            restarts_counter=self._metrics.task_restarts.labels("reply_reader"),
        )
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self.dropped = 0  # replies nobody here was waiting for (others', or late)

    @property
    def topic(self) -> str:
        return self._settings.topic

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def state(self) -> TaskState:
        """The supervised task's: `running`, or `restarting` after it died."""
        return self._supervisor.state

    def _new_consumer(self) -> Any:
        return AIOKafkaConsumer(
            **options.client_options(self._kafka),
            client_id=f"{self._kafka.producer.client_id}-replies",
            group_id=None,  # no group: every instance reads every reply (see module doc)
            enable_auto_commit=False,
            auto_offset_reset="latest",
            request_timeout_ms=self._kafka.producer.request_timeout_ms,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (bounded attempts, backoff); `ready` once positioned."""
        self._supervisor.start()

    async def stop(self) -> None:
        """Let the reader finish its current step (a connection attempt or a poll), then close.

        Not cancelled outright: aiokafka leaves a half-made connection open when cancelled
        while it bootstraps. Bounded all the same.
        """
        self._stopping.set()
        if (task := self._supervisor.task) is not None:
            limit_s = self._kafka.producer.connect_timeout_ms / 1000 + _POLL_MS / 1000 + 1
            await asyncio.wait({task}, timeout=limit_s)
        await self._supervisor.stop()
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters.clear()

    async def _run(self) -> None:
        connected = await connect_until_stopped(
            self._connect_once, self._stopping, self._kafka.producer.reconnect_backoff_max_ms
        )
        if not connected:  # stopped before a broker answered
            return
        try:
            while not self._stopping.is_set():
                fetched = await fetching.fetch(self._consumer, timeout_ms=_POLL_MS)
                if (skipped := fetched.unreadable) is not None:
                    self._metrics.replies_unusable.labels("unreadable").inc()
                    logger.error(
                        "reply reader: %s cannot be decoded (%s): skipped",
                        skipped.where,
                        skipped.error,
                    )
                for record in fetched.records:
                    self._deliver(record)
        finally:
            self._ready.clear()
            await self._close()

    async def _connect_once(self) -> bool:
        consumer = self._consumer_factory()
        try:
            async with asyncio.timeout(self._kafka.producer.connect_timeout_ms / 1000):
                await consumer.start()
                if self._settings.create_topic:
                    await self._ensure_topic()
                partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    raise KafkaError(f"reply topic {self.topic} does not exist")
                assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(assigned)
                await consumer.seek_to_end(*assigned)
                for tp in assigned:  # resolve the positions now: replies after this are seen
                    await consumer.position(tp)
        except (KafkaError, OSError, TimeoutError) as exc:
            logger.warning("reply reader: cannot start yet (%s: %s)", type(exc).__name__, exc)
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(self._kafka.producer.close_timeout_ms / 1000):
                    await consumer.stop()
            return False
        except asyncio.CancelledError:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(self._kafka.producer.close_timeout_ms / 1000):
                    await consumer.stop()
            raise
        self._consumer = consumer
        self._ready.set()
        logger.info("reply reader: reading %s (%d partitions)", self.topic, len(assigned))
        return True

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(
            **options.client_options(self._kafka),
            request_timeout_ms=self._kafka.producer.request_timeout_ms,
        )
        try:
            await admin.start()
            brokers = len(admin._client.cluster.brokers()) or 1
            topic = NewTopic(
                self.topic,
                num_partitions=self._settings.partitions,
                replication_factor=min(self._settings.replication_factor, brokers),
                topic_configs={"retention.ms": str(self._settings.retention_ms)},
            )
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics([topic])
                for _, code, *_ in getattr(response, "topic_errors", []):
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise KafkaError(f"cannot create reply topic (error {code})")
        finally:
            await admin.close()
            # close() does nothing when start() failed half-way; its connections stay open
            await admin._client.close()

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(self._kafka.producer.close_timeout_ms / 1000):
                    await consumer.stop()

    def _deliver(self, record: Any) -> None:
        headers = dict(record.headers or ())
        correlation = headers.get(CORRELATION_HEADER) or record.key
        waiter = self._waiters.pop(correlation, None) if correlation else None
        if waiter is None or waiter.done():
            self.dropped += 1
            logger.debug("reply reader: dropped a reply nobody here waits for")
            return
        try:
            reply = _parse(record)
        except Exception as exc:  # noqa: BLE001 - any malformed reply fails its request only
            self._metrics.replies_unusable.labels("malformed").inc()
            logger.warning(
                "reply reader: %s[%d]@%d is not a reply (%s)",
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
            )
            waiter.set_exception(ValueError(f"malformed reply: {type(exc).__name__}"))
            return
        waiter.set_result(reply)

    # -- waiting -----------------------------------------------------------------------------

    def expect(self, correlation_id: bytes) -> asyncio.Future[Reply]:
        """Register interest in the reply to `correlation_id` (before publishing the request)."""
        if not self.ready:
            raise RepliesUnavailable("the reply topic is not being read (Kafka unreachable)")
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiters[correlation_id] = waiter
        return waiter

    def forget(self, correlation_id: bytes) -> None:
        waiter = self._waiters.pop(correlation_id, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    @property
    def waiting(self) -> int:
        return len(self._waiters)


def _parse(record: Any) -> Reply:
    """The reply in `record`'s JSON value (an object with at least `status`).

    Raises:
        ValueError, KeyError, TypeError: it is not one.
    """
    body = json.loads(record.value)
    if not isinstance(body, dict):
        raise TypeError(f"a JSON {type(body).__name__}, not an object")
    handled_at = body.get("handled_at")
    event_id, detail = body.get("event_id"), body.get("detail")
    return Reply(
        event_id=str(event_id) if event_id is not None else None,
        status=str(body["status"]),
        detail=str(detail) if detail is not None else None,
        handled_at=datetime.fromisoformat(str(handled_at)) if handled_at else None,
        partition=record.partition,
        offset=record.offset,
    )


class RequestReply:
    """Publish a request with reply headers, then wait for the reply within the deadline."""

    def __init__(self, delivery: DeliveryService, reader: ReplyReader, timeout_ms: int) -> None:
        self._delivery = delivery
        self._reader = reader
        self._timeout_ms = timeout_ms

    async def send(
        self, message: OutgoingMessage, *, policy: str, timeout_ms: int | None = None
    ) -> tuple[DeliveryReceipt | QueuedReceipt, Reply]:
        """Returns the request's receipt and the reply.

        Raises:
            RepliesUnavailable: the reply topic is not read; the request was not published.
            PublishError: the request was not published (recorded, see `DeliveryService`).
            ReplyTimeout: published, but no reply in time; carries the receipt.
            MalformedReply: published, but the reply is not one; carries the receipt.
        """
        correlation_id = uuid.uuid4().hex.encode()
        request = replace(
            message,
            headers=(
                *message.headers,
                (REPLY_TOPIC_HEADER, self._reader.topic.encode()),
                (CORRELATION_HEADER, correlation_id),
            ),
        )
        waiter = self._reader.expect(correlation_id)
        timeout_ms = timeout_ms or self._timeout_ms
        try:
            receipt = await self._delivery.emit(request, policy=policy)
            try:
                async with asyncio.timeout(timeout_ms / 1000):
                    reply = await waiter
            except TimeoutError:
                raise ReplyTimeout(receipt, timeout_ms) from None
            except ValueError as error:  # see ReplyReader._deliver
                raise MalformedReply(receipt, str(error)) from None
        finally:
            self._reader.forget(correlation_id)
        return receipt, reply
