"""An asyncio face for confluent-kafka's `Producer` (librdkafka): delivery reports as futures.

- `produce()` hands the record to librdkafka's queue (it does not block) with an
  `on_delivery` callback; librdkafka's own threads batch, send and retry it.
- Delivery reports are served only by `Producer.poll()`/`flush()`. One daemon thread calls
  `poll()` in a loop; the callbacks (run by `poll()` in that thread) only collect the reports,
  and after each `poll()` the whole batch is handed to the event loop with one
  `loop.call_soon_threadsafe`, which resolves the callers' futures. One wake-up of the event
  loop per batch rather than per message matters under concurrency.
- `start()` makes one metadata request (bounded) so that a missing broker fails the start
  instead of the first publish; `stop()` stops the poll thread, then flushes (bounded) and
  hands over the last reports.

confluent-kafka ships its own `confluent_kafka.aio.AIOProducer`, but in 2.16 it refuses
headers ("not supported in AIOProducer batch mode") and buffers records in Python until 1000
are queued or `buffer_timeout` (1 s) passes, so it cannot carry this contract's headers and a
lone request would wait up to a second.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

__all__ = ["AsyncConfluentProducer", "DeliveredRecord", "librdkafka_config"]

_POLL_S = 0.1

_Report = tuple["asyncio.Future[DeliveredRecord]", KafkaError | None, Message]


class DeliveredRecord:
    """Where the broker put a record (from librdkafka's delivery report). With acks=0 the
    broker sends no answer and librdkafka reports no offset: `offset` is -1 then."""

    __slots__ = ("offset", "partition", "timestamp")

    def __init__(self, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        if partition is None:
            raise KafkaException("delivery report without a partition")
        self.partition: int = partition
        self.offset: int = -1 if offset is None else offset
        self.timestamp: int = message.timestamp()[1]


def _settle(reports: list[_Report]) -> None:
    """Resolve the futures of a batch of delivery reports (runs on the event loop)."""
    for future, error, message in reports:
        if future.done():  # the caller was cancelled meanwhile
            continue
        if error is not None:
            future.set_exception(KafkaException(error))
            continue
        try:
            future.set_result(DeliveredRecord(message))
        except KafkaException as exc:
            future.set_exception(exc)


class AsyncConfluentProducer:
    def __init__(self, config: Mapping[str, object]) -> None:
        self._config = dict(config)
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Filled by delivery callbacks; only one thread serves callbacks at a time.
        self._reports: list[_Report] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        producer = Producer(self._config)
        # Fail the start, not the first publish, when no broker answers.
        await asyncio.to_thread(producer.list_topics, timeout=timeout_s)
        self._loop = asyncio.get_running_loop()
        self._producer = producer
        self._thread = threading.Thread(
            target=self._poll_loop, args=(producer,), name="confluent-poll", daemon=True
        )
        self._thread.start()

    def _poll_loop(self, producer: Producer) -> None:
        while not self._stopping.is_set():
            producer.poll(_POLL_S)
            self._hand_over()

    def _hand_over(self) -> None:
        if self._reports and self._loop is not None:
            reports, self._reports = self._reports, []
            self._loop.call_soon_threadsafe(_settle, reports)

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> DeliveredRecord:
        """Queue one record and wait for its delivery report."""
        if self._producer is None or self._loop is None:
            raise RuntimeError("producer not started")
        future: asyncio.Future[DeliveredRecord] = self._loop.create_future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            self._reports.append((future, error, message))

        self._producer.produce(topic, value, key, headers=list(headers), on_delivery=on_delivery)
        return await future

    async def stop(self, timeout_s: float = 10.0) -> int:
        """Flush for at most `timeout_s`; return how many records were still undelivered."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout_s)
            self._thread = None
        producer, self._producer = self._producer, None
        left = 0
        if producer is not None:
            left = await asyncio.to_thread(producer.flush, timeout_s)
            self._hand_over()
        return left


def librdkafka_config(
    bootstrap_servers: Sequence[str], client_id: str, *, linger_ms: int = 0, acks: str = "all"
) -> dict[str, object]:
    """acks=all with idempotence by default, like every other peer (`acks` "0" or "1" turns
    idempotence off, which needs acks=all); linger 0 like aiokafka's default (librdkafka's
    own default is 5 ms)."""
    return {
        "bootstrap.servers": ",".join(bootstrap_servers),
        "client.id": client_id,
        "enable.idempotence": acks == "all",
        "acks": acks,
        "linger.ms": linger_ms,
    }
