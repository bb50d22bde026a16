"""The publisher's lifecycle, deadline and error classification, with a fake aiokafka producer.

These are pure unit tests of our own logic; what Kafka does is tested against real brokers in
tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from aiokafka.errors import (  # type: ignore[import-untyped]
    ClusterAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownTopicOrPartitionError,
)

from kafka_events import KafkaConfig, Metrics, Policy, ProducerConfig, errors
from kafka_events.errors import AccessRefused
from kafka_events.messages import OutgoingMessage
from kafka_events.producer import KafkaPublisher
from kafka_events.producer import ProducerState as PublisherState
from kafka_events.producer.publish import RetryHook
from kafka_events.testing import FakeProducer
from kafka_events.testing import RecordMetadata as Metadata

__all__ = ["FakeProducer", "Metadata", "make_publisher"]  # shared with other unit tests
MESSAGE = OutgoingMessage(topic="t", value=b"{}", key=b"k", event_id="e-1")


def make_publisher(
    *producers: FakeProducer,
    retry: dict[str, Any] | None = None,
    should_retry: RetryHook | None = None,
    metrics: Metrics | None = None,
    **policy: Any,
) -> KafkaPublisher:
    queue = list(producers)
    replicated = Policy.model_validate(
        {
            "acks": "all",
            "enable_idempotence": True,
            "retry": {"retries": 0, **(retry or {})},
            **policy,
        }
    )
    kafka = KafkaConfig(
        producer=ProducerConfig(
            connect_timeout_ms=200, reconnect_backoff_max_ms=50, close_timeout_ms=200
        )
    )
    return KafkaPublisher(
        kafka,
        replicated,
        producer_factory=lambda: queue.pop(0),
        should_retry=should_retry,
        metrics=metrics,
    )


async def test_publish_before_start_is_a_clear_error() -> None:
    publisher = make_publisher(FakeProducer())

    with pytest.raises(errors.PublisherStateError, match="is new"):
        await publisher.publish(MESSAGE)


async def test_publish_after_stop_is_a_clear_error() -> None:
    producer = FakeProducer()
    publisher = make_publisher(producer)
    await publisher.start()
    await publisher.stop()

    with pytest.raises(errors.PublisherStateError, match="is stopped"):
        await publisher.publish(MESSAGE)
    assert producer.stopped
    assert publisher.state is PublisherState.STOPPED


async def test_start_twice_is_refused_and_stop_twice_is_harmless() -> None:
    publisher = make_publisher(FakeProducer())
    await publisher.start()

    with pytest.raises(errors.PublisherStateError):
        await publisher.start()
    await publisher.stop()
    await publisher.stop()
    assert publisher.state is PublisherState.STOPPED


async def test_receipt_carries_the_broker_metadata() -> None:
    publisher = make_publisher(FakeProducer(ack=Metadata("t", 2, 41, 1234, 1, 5)))
    await publisher.start()

    receipt = await publisher.publish(MESSAGE)
    await publisher.stop()

    assert (receipt.partition, receipt.offset, receipt.timestamp) == (2, 41, 1234)
    assert receipt.timestamp_type == "LogAppendTime"
    assert receipt.log_start_offset == 5
    assert receipt.confirmed is True
    assert receipt.event_id == "e-1"


async def test_deadline_bounds_a_publish_that_is_never_acknowledged() -> None:
    publisher = make_publisher(
        FakeProducer(never_ack=True), delivery_timeout_ms=300, attempt_timeout_ms=300
    )
    await publisher.start()

    started = time.monotonic()
    with pytest.raises(errors.DeliveryTimeout) as caught:
        await publisher.publish(MESSAGE)
    elapsed = time.monotonic() - started
    await publisher.stop()

    assert caught.value.sent is None  # it reached the producer: it may still be written
    assert caught.value.event_id == "e-1"
    assert 0.25 < elapsed < 2.0
    assert publisher.awaiting_acknowledgement == 0


async def test_unreachable_broker_at_start_leaves_it_connecting_then_it_recovers() -> None:
    down = KafkaConnectionError("refused")
    publisher = make_publisher(
        FakeProducer(start_error=down),
        FakeProducer(start_error=down),
        FakeProducer(ack=Metadata("t", 1, 7, 1000, 0, 0)),
    )

    await publisher.start()
    assert publisher.state is PublisherState.CONNECTING
    assert not await publisher.ping()
    receipt = await publisher.publish(MESSAGE)  # waits for the background reconnect
    await publisher.stop()

    assert receipt.offset == 7


async def test_a_refusal_at_start_stops_the_start_instead_of_reconnecting() -> None:
    denied = TransactionalIdAuthorizationFailed("api-tx")
    spare = FakeProducer()
    producer = FakeProducer(start_error=denied)
    publisher = make_publisher(producer, spare)

    with pytest.raises(AccessRefused, match="not authorised: TransactionalIdAuthorizationFailed"):
        await publisher.start()

    assert producer.stopped
    assert publisher.state is PublisherState.STOPPED
    assert not spare.started  # no reconnection attempt in the background
    await publisher.stop()


class _HangingProducer(FakeProducer):
    """A producer whose start() never returns (e.g. waiting for a producer id)."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = asyncio.Event()

    async def start(self) -> None:
        self.starting.set()
        await asyncio.Event().wait()


async def test_stop_during_a_background_reconnect_closes_the_half_started_producer() -> None:
    hanging = _HangingProducer()
    publisher = make_publisher(FakeProducer(start_error=KafkaConnectionError()), hanging)
    await publisher.start()
    await asyncio.wait_for(hanging.starting.wait(), timeout=5)

    await publisher.stop()

    assert hanging.stopped  # its connections are closed, not left to the garbage collector
    assert publisher.state is PublisherState.STOPPED


async def test_publish_while_connecting_fails_within_the_deadline_as_not_sent() -> None:
    down = KafkaConnectionError("refused")
    publisher = make_publisher(
        *(FakeProducer(start_error=down) for _ in range(100)),
        delivery_timeout_ms=300,
        attempt_timeout_ms=300,
    )
    await publisher.start()

    with pytest.raises(errors.DeliveryTimeout) as caught:
        await publisher.publish(MESSAGE)
    await publisher.stop()

    assert caught.value.sent is False


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (MessageSizeTooLargeError(), errors.RecordTooLarge),
        (TopicAuthorizationFailedError(), errors.PublishRejected),
        (NotEnoughReplicasError(), errors.BrokerUnavailable),
    ],
)
async def test_errors_are_classified(raised: Exception, expected: type[Exception]) -> None:
    publisher = make_publisher(FakeProducer(send_error=raised))
    await publisher.start()

    with pytest.raises(expected) as caught:
        await publisher.publish(MESSAGE)
    await publisher.stop()

    assert type(caught.value) is expected
    assert "Traceback" not in str(caught.value)


# The README's error table, as the broker reports each error through aiokafka's future.
@pytest.mark.parametrize(
    ("raised", "expected", "retried"),
    [
        (KafkaTimeoutError(), errors.BrokerUnavailable, True),  # buffer full, metadata wait
        (UnknownTopicOrPartitionError(), errors.BrokerUnavailable, True),
        (RequestTimedOutError(), errors.BrokerUnavailable, True),
        (NotLeaderForPartitionError(), errors.BrokerUnavailable, True),  # leader election
        (LeaderNotAvailableError(), errors.BrokerUnavailable, True),
        (NotEnoughReplicasError(), errors.BrokerUnavailable, True),
        (NotEnoughReplicasAfterAppendError(), errors.BrokerUnavailable, True),
        (KafkaConnectionError(), errors.BrokerUnavailable, True),
        (MessageSizeTooLargeError(), errors.RecordTooLarge, False),
        (TopicAuthorizationFailedError(), errors.PublishRejected, False),
        (ClusterAuthorizationFailedError(), errors.PublishRejected, False),
    ],
)
async def test_error_table(
    raised: Exception, expected: type[errors.PublishError], retried: bool
) -> None:
    producer = FakeProducer(ack_error=raised)
    publisher = make_publisher(producer, retry={"retries": 2, "initial_retry_time_ms": 1})
    await publisher.start()

    with pytest.raises(expected) as caught:
        await publisher.publish(MESSAGE)
    await publisher.stop()

    assert type(caught.value) is expected
    assert caught.value.attempts == producer.sends == (3 if retried else 1)
    assert caught.value.cause == type(raised).__name__
    # A retriable failure after the message left the process may be written all the same (a
    # retry or a replay then duplicates it: NOT_ENOUGH_REPLICAS_AFTER_APPEND means it *was*
    # appended); a refusal means the broker did not write it.
    assert caught.value.sent is (None if retried else False)


@pytest.mark.parametrize("ordered", [True, False])
async def test_a_retried_message_is_not_overtaken_by_its_keys_next_one(ordered: bool) -> None:
    producer = FakeProducer(send_errors=[NotEnoughReplicasError()])  # the first send fails
    publisher = make_publisher(
        producer, retry={"retries": 1, "initial_retry_time_ms": 20}, ordered_per_key=ordered
    )
    await publisher.start()
    first = OutgoingMessage(topic="t", value=b"1", key=b"k", event_id="e-1")
    second = OutgoingMessage(topic="t", value=b"2", key=b"k", event_id="e-2")
    other_key = OutgoingMessage(topic="t", value=b"3", key=b"other", event_id="e-3")

    await asyncio.gather(
        publisher.publish(first), publisher.publish(second), publisher.publish(other_key)
    )
    await publisher.stop()

    values = [value for _, value in producer.sent]
    if ordered:
        assert values.index(b"1") < values.index(b"2")
        assert values.index(b"3") < values.index(b"1")  # other keys do not wait
    else:
        assert values.index(b"2") < values.index(b"1")  # overtaken while it waited to retry
    assert len(publisher._key_order) == 0  # nothing left queued


async def test_a_publish_that_times_out_while_queued_still_keeps_its_place() -> None:
    producer = FakeProducer(never_ack=True)
    publisher = make_publisher(producer, delivery_timeout_ms=100)
    await publisher.start()
    messages = [
        OutgoingMessage(topic="t", value=str(n).encode(), key=b"k", event_id=f"e-{n}")
        for n in range(3)
    ]

    results = await asyncio.gather(
        *(publisher.publish(m) for m in messages), return_exceptions=True
    )
    await publisher.stop()

    assert all(isinstance(r, errors.DeliveryTimeout) for r in results)
    assert [value for _, value in producer.sent] == [b"0"]  # the others never went out
    assert [r.sent for r in results if isinstance(r, errors.DeliveryTimeout)][1:] == [
        False,
        False,
    ]


async def test_a_deadline_passed_in_flight_hands_over_the_late_outcome() -> None:
    producer = FakeProducer(never_ack=True)
    publisher = make_publisher(producer, delivery_timeout_ms=100)
    await publisher.start()

    with pytest.raises(errors.DeliveryTimeout) as caught:
        await publisher.publish(MESSAGE)
    late = caught.value.in_flight
    assert late is not None
    assert caught.value.sent is None
    producer.futures[0].set_result(Metadata("t", 1, 9, 1000, 0, 0))
    receipt = await asyncio.wait_for(late, timeout=1)
    await publisher.stop()

    assert (receipt.partition, receipt.offset, receipt.event_id) == (1, 9, "e-1")


async def test_a_deadline_passed_before_sending_has_nothing_in_flight() -> None:
    publisher = make_publisher(FakeProducer(), delivery_timeout_ms=100)
    publisher.producer._state = PublisherState.CONNECTING  # as while reconnecting: no producer

    with pytest.raises(errors.DeliveryTimeout) as caught:
        await publisher.publish(MESSAGE)

    assert caught.value.in_flight is None
    assert caught.value.sent is False


async def test_stop_is_bounded_even_when_the_producer_never_finishes_closing() -> None:
    class Stuck(FakeProducer):
        async def flush(self) -> None:
            await asyncio.Event().wait()

        async def stop(self) -> None:
            # like aiokafka's sender finishing a request first: the first cancel is ignored
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
            await asyncio.sleep(3600)

    producer = Stuck()
    publisher = make_publisher(producer)
    await publisher.start()

    started = time.monotonic()
    await publisher.stop()

    assert time.monotonic() - started < 1.5  # close_timeout_ms=200 for each step
    assert publisher.state is PublisherState.STOPPED
    assert producer._message_accumulator.failed_with is not None  # releases aiokafka's stop()
    assert producer.client.closed  # and if stop() still hangs, the sockets are freed
    assert all(c.closed for c in producer.client._conns.values())


async def test_a_stop_that_fails_half_way_still_closes_the_connections() -> None:
    class Failing(FakeProducer):
        async def stop(self) -> None:
            raise KeyError("batch")  # aiokafka tripping over a batch failed under it

    producer = Failing()
    publisher = make_publisher(producer)
    await publisher.start()

    await publisher.stop()

    assert publisher.state is PublisherState.STOPPED
    assert producer.client.closed
    assert all(c.closed for c in producer.client._conns.values())


FAST_RETRY = {"retries": 3, "initial_retry_time_ms": 10, "max_retry_time_ms": 20}


async def test_retriable_errors_are_retried_with_the_same_event_id() -> None:
    producer = FakeProducer(send_errors=[NotEnoughReplicasError(), KafkaConnectionError()])
    publisher = make_publisher(producer, retry=FAST_RETRY)
    await publisher.start()

    receipt = await publisher.publish(MESSAGE)
    await publisher.stop()

    assert receipt.attempts == 3
    assert producer.sends == 3
    assert receipt.event_id == "e-1"


async def test_retries_are_bounded_by_their_count() -> None:
    producer = FakeProducer(send_error=NotEnoughReplicasError())
    publisher = make_publisher(producer, retry=FAST_RETRY)
    await publisher.start()

    with pytest.raises(errors.BrokerUnavailable) as caught:
        await publisher.publish(MESSAGE)
    await publisher.stop()

    assert producer.sends == 4  # the first attempt and 3 retries
    assert caught.value.attempts == 4
    assert caught.value.cause == "NotEnoughReplicasError"


async def test_retries_are_bounded_by_the_deadline() -> None:
    producer = FakeProducer(send_error=NotEnoughReplicasError())
    publisher = make_publisher(
        producer,
        retry={"retries": 100, "initial_retry_time_ms": 50, "multiplier": 1, "factor": 0},
        delivery_timeout_ms=400,
    )
    await publisher.start()

    started = time.monotonic()
    with pytest.raises(errors.DeliveryTimeout) as caught:
        await publisher.publish(MESSAGE)
    elapsed = time.monotonic() - started
    await publisher.stop()

    assert 0.35 < elapsed < 2.0
    assert 5 <= caught.value.attempts < 100


async def test_non_retriable_errors_are_not_retried() -> None:
    producer = FakeProducer(send_error=TopicAuthorizationFailedError())
    publisher = make_publisher(producer, retry=FAST_RETRY)
    await publisher.start()

    with pytest.raises(errors.PublishRejected) as caught:
        await publisher.publish(MESSAGE)
    await publisher.stop()

    assert producer.sends == 1
    assert caught.value.attempts == 1


async def test_the_retry_hook_can_stop_retrying() -> None:
    producer = FakeProducer(send_error=NotEnoughReplicasError())
    seen: list[str] = []

    def only_once(error: errors.PublishError) -> bool:
        seen.append(error.cause)
        return len(seen) < 2

    publisher = make_publisher(producer, retry=FAST_RETRY, should_retry=only_once)
    await publisher.start()

    with pytest.raises(errors.BrokerUnavailable):
        await publisher.publish(MESSAGE)
    await publisher.stop()

    assert producer.sends == 2
    assert seen == ["NotEnoughReplicasError", "NotEnoughReplicasError"]


async def test_a_send_stuck_before_reaching_a_broker_is_withdrawn_and_retried() -> None:
    class StuckOnce(FakeProducer):
        async def send(
            self, topic: str, value: bytes | None = None, **kwargs: Any
        ) -> asyncio.Future[Any]:
            if self.sends == 0:
                self.sends += 1
                await asyncio.Event().wait()  # e.g. waiting for metadata that never comes
            return await super().send(topic, value, **kwargs)

    producer = StuckOnce()
    publisher = make_publisher(producer, retry=FAST_RETRY, attempt_timeout_ms=100)
    await publisher.start()

    receipt = await publisher.publish(MESSAGE)
    await publisher.stop()

    assert receipt.attempts == 2
