"""Test doubles: test your own routes without a broker, the way FastStream's `TestKafkaBroker`
and httpx's `MockTransport` let you.

    kafka = KafkaEvents(KafkaConfig(), store=MemoryStore(), policies={...})
    app = FastAPI(lifespan=lifespan(kafka))

    async def test_place_order() -> None:
        with TestKafkaEvents(kafka) as broker:
            async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(manager.app), base_url="http://test"
            ) as client:
                assert (await client.post("/orders", json={...})).status_code == 202
                assert broker.published[0].topic == "orders.placed"

                broker.fail()        # the broker is unreachable: publishes fail at once
                answer = await client.post("/orders", json={...})
                assert answer.json()["record_id"] is not None   # kept for replay
                broker.recover()     # the relay replays what was kept

`TestKafkaEvents` swaps the producers of a `KafkaEvents` that is not running for in-memory
ones (`FakeProducer`) and skips the start-up access check. Request-reply is answered by the
`reply` function you give (the request's record in, the reply's status, or status and detail,
out), through the real reply reader, which is ready once it has started in the background (as
with a broker: `kafka.replies.ready`); without one, `request()` answers `RepliesUnavailable`.
Everything else is the real library: policies, receipts, the store, the relay and the error
handlers.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiokafka.errors import KafkaConnectionError  # type: ignore[import-untyped]

from kafka_events.client import KafkaEvents, State
from kafka_events.messages import OutgoingMessage, header
from kafka_events.replies import CORRELATION_HEADER, REPLY_TOPIC_HEADER

RecordMetadata = namedtuple(
    "RecordMetadata", "topic partition offset timestamp timestamp_type log_start_offset"
)
"""What aiokafka's acknowledgement carries, as `FakeProducer` gives it."""


class _Accumulator:
    def __init__(self) -> None:
        self.failed_with: BaseException | None = None

    def fail_all(self, exc: BaseException) -> None:
        self.failed_with = exc


class _Connection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Client:
    def __init__(self) -> None:
        self.closed = False
        self._conns = {("node", 0): _Connection()}

    async def close(self) -> None:
        self.closed = True

    def get_random_node(self) -> int:
        return 0

    async def send(self, node_id: int, request: Any) -> None:
        return None


@dataclass
class FakeProducer:
    """Just enough of `AIOKafkaProducer`, in memory; its behaviour is set by its fields.

    `before_send` sees each record handed over and may return an error to raise for it;
    `send_errors` are raised by successive sends (then sends succeed); `send_error` by all;
    `ack_error` fails every acknowledgement; `never_ack` leaves them pending. `sent` has the
    (topic, value) of every record handed over; acknowledged records are appended to
    `published` (shared, when given) with increasing offsets per partition (`partitions` of
    them; keyed records by CRC32 of the key).
    """

    start_error: BaseException | None = None
    send_error: BaseException | None = None
    send_errors: list[BaseException] = field(default_factory=list)
    ack: Any = None
    ack_error: BaseException | None = None
    never_ack: bool = False
    partitions: int = 3
    published: list[OutgoingMessage] = field(default_factory=list)
    # asked before each send, with the record handed over: an error to raise, or None
    before_send: Callable[[OutgoingMessage], BaseException | None] | None = None
    sends: int = 0
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._message_accumulator = _Accumulator()
        self.client = _Client()

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def begin_transaction(self) -> None:
        return None

    async def commit_transaction(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def send(
        self, topic: str, value: bytes | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        """As aiokafka's: `key`, `headers` and `partition` are read from `options`."""
        key: bytes | None = options.get("key")
        partition: int | None = options.get("partition")
        headers = list(options.get("headers") or [])
        record = OutgoingMessage(
            topic=topic,
            value=value or b"",
            key=key,
            headers=tuple(headers),
            event_id=next((v.decode() for k, v in headers if k == "event_id"), ""),
        )
        self.sends += 1
        if self.before_send is not None and (error := self.before_send(record)) is not None:
            raise error
        if self.send_errors:
            raise self.send_errors.pop(0)
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((topic, value or b""))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if self.ack_error is not None:
            future.set_exception(self.ack_error)
        elif not self.never_ack:
            chosen = partition if partition is not None else self._partition(key)
            offset = self._offsets.get((topic, chosen), 0)
            self._offsets[topic, chosen] = offset + 1
            self.published.append(record)
            future.set_result(
                self.ack
                if self.ack is not None
                else RecordMetadata(topic, chosen, offset, 1_700_000_000_000, 0, 0)
            )
        return future

    def _partition(self, key: bytes | None) -> int:
        return zlib.crc32(key) % self.partitions if key is not None else 0


class TestKafkaEvents:
    """Runs a `KafkaEvents` against in-memory producers while the `with` block lasts."""

    __test__ = False  # not a pytest test class

    def __init__(self, kafka: KafkaEvents, *, reply: ReplyWith | None = None) -> None:
        self._kafka = kafka
        self._reply = reply
        self.published: list[OutgoingMessage] = []
        self._failing: BaseException | None = None
        self._saved: list[tuple[str, Any]] = []
        self._replies: asyncio.Queue[Any] | None = None

    def _factory(self) -> FakeProducer:
        return FakeProducer(published=self.published, before_send=self._before_send)

    def _before_send(self, record: OutgoingMessage) -> BaseException | None:
        if self._failing is not None:
            return self._failing
        if self._reply is not None and self._replies is not None:
            reply_topic = header(record.headers, REPLY_TOPIC_HEADER)
            correlation = header(record.headers, CORRELATION_HEADER)
            if reply_topic is not None and correlation is not None:
                answer = self._reply(record)
                status, detail = answer if isinstance(answer, tuple) else (answer, None)
                self._replies.put_nowait(
                    _ReplyRecord(
                        key=correlation,
                        value=json.dumps(
                            {"event_id": record.event_id, "status": status, "detail": detail}
                        ).encode(),
                        headers=[(CORRELATION_HEADER, correlation)],
                        offset=self._replies.qsize(),
                    )
                )
        return None

    def _reply_consumer(self) -> _ReplyConsumer:
        self._replies = asyncio.Queue()
        return _ReplyConsumer(self._replies)

    def __enter__(self) -> Self:
        if self._kafka.state is State.RUNNING:
            raise RuntimeError("TestKafkaEvents patches a KafkaEvents that is not running")
        self._patch("_check_access", False)
        self._patch("_producer_factory", self._factory)
        # while failing, publishes fail at once instead of retrying to their deadline
        self._patch("_should_retry", lambda _error: self._failing is None)
        if self._reply is None:
            self._patch("_replies", None)  # request-reply: RepliesUnavailable
        elif self._kafka._replies is not None:
            self._patch("_replies", self._kafka._replies.model_copy(update={"create_topic": False}))
            self._patch("_reply_consumer_factory", self._reply_consumer)
        self._kafka._build()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for name, value in reversed(self._saved):
            setattr(self._kafka, name, value)
        self._saved.clear()
        if self._kafka.state is not State.RUNNING:
            self._kafka._build()

    def _patch(self, name: str, value: Any) -> None:
        self._saved.append((name, getattr(self._kafka, name)))
        setattr(self._kafka, name, value)

    def fail(self, error: BaseException | None = None) -> None:
        """Make every publish fail from now on, with `error` (default: the broker is
        unreachable, a retriable error: the message is recorded in the store)."""
        self._failing = error or KafkaConnectionError("the test broker is unreachable")

    def recover(self) -> None:
        """Publishes succeed again, and the relay is woken to replay what was recorded."""
        self._failing = None
        self._kafka.relay.wake()

    def published_to(self, topic: str) -> Iterator[OutgoingMessage]:
        return (m for m in self.published if m.topic == topic)


ReplyWith = Callable[[OutgoingMessage], str | tuple[str, str | None]]
"""How `TestKafkaEvents` answers a request: its status, or its status and detail."""


@dataclass
class _ReplyRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    offset: int
    partition: int = 0


class _ReplyConsumer:
    """Just enough of `AIOKafkaConsumer` for the reply reader: one partition, fed by a queue."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue
        self._client = _Client()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list[Any]) -> None:
        self._assigned = set(partitions)

    def assignment(self) -> set[Any]:
        return set(getattr(self, "_assigned", ()))

    async def seek_to_end(self, *partitions: Any) -> None:
        return None

    async def position(self, partition: Any) -> int:
        return 0

    async def getmany(
        self, *partitions: Any, timeout_ms: int, max_records: int | None = None
    ) -> dict[Any, list[Any]]:
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                record = await self._queue.get()
        except TimeoutError:
            return {}
        return {0: [record]}
