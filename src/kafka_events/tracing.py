"""Trace context in Kafka headers, and the messaging spans of the publisher and the worker.

On the wire: the W3C Trace Context headers `traceparent` and `tracestate` (the latter only
when not empty), plus W3C `baggage` when the context carries any, as Kafka record headers with
UTF-8 values: the names and values used over HTTP, and what other Kafka instrumentations (the
OpenTelemetry Java agent, opentelemetry-instrumentation-aiokafka) write and read too. They come
from OpenTelemetry's global propagator (`OTEL_PROPAGATORS`, default `tracecontext,baggage`). A
record has at most one of each: writing a context replaces the one it carried; reading takes
the last one, as for every other header (`kafka_events.messages.header`).

Spans, named and attributed after OpenTelemetry's messaging semantic conventions (1.44):

- `send <topic>`, PRODUCER: one per `KafkaPublisher.publish()`, its retries and its wait for
  the broker's acknowledgement included (one per transaction for `publish_atomically()`, whose
  records all carry its context); `messaging.message.id` is the event id, partition and
  offset are set once acknowledged, `error.type` when it fails. Its context is what the record
  carries. Its parent is the current span (the HTTP request), or, when there is none (the relay
  replaying a stored record), the context stored with the record, so a replay stays in the
  trace of the request that made the message.
- `process <topic>`, CONSUMER: the worker's handling of one record, a child of the context the
  record carries; the email (`send email`) and the reply (`send <reply topic>`, PRODUCER, whose
  context the reply carries) are its children.

Not recorded: record keys and values (the key is an email address).

Why our own spans and not opentelemetry-instrumentation-aiokafka (0.66b1; it declares aiokafka
>=0.8,<1.0, so it would install beside 0.14): it patches `AIOKafkaProducer.send` and
`AIOKafkaConsumer.getone/getmany` for the whole process, and its spans do not show what matters
here. Its producer span ends when `send()` has queued the record, before the acknowledgement: no
offset, no failure after queueing (a deadline, NOT_ENOUGH_REPLICAS), and each of our retries
makes a new span with a new `traceparent`. It appends a second `traceparent` to a record that
already has one (a replay). Its consumer spans end as soon as a batch is fetched, so the
worker's handling is not inside them. The publisher facade already owns the headers, retries
and acknowledgement, and the worker its loop: a span in each, plus a header carrier, is this
module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from kafka_events.errors import PublishError
from kafka_events.messages import OutgoingMessage
from kafka_events.receipts import DeliveryReceipt

Headers = Sequence[tuple[str, bytes]]

# Attribute names of the messaging semantic conventions (still "development" there, so written
# out here rather than imported from the semconv package's incubating module).
SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
PARTITION = "messaging.destination.partition.id"
OFFSET = "messaging.kafka.offset"
MESSAGE_ID = "messaging.message.id"
BODY_SIZE = "messaging.message.body.size"
BATCH_SIZE = "messaging.batch.message_count"
CONSUMER_GROUP = "messaging.consumer.group.name"
ERROR_TYPE = "error.type"
# Ours.
POLICY = "kafka_events.delivery_policy"
ATTEMPTS = "kafka_events.attempts"


class _HeadersGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = None
        for name, value in carrier:
            if name == key and value is not None:
                found = value
        return None if found is None else [found.decode("utf-8", errors="replace")]

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeadersGetter()


def extract(headers: Headers) -> Context:
    """The trace context (and baggage) a record carries; an empty context when none."""
    return propagate.extract(headers, getter=_GETTER)


def with_context(headers: Headers, span: Span) -> tuple[tuple[str, bytes], ...]:
    """`headers` carrying `span`'s context (and the current baggage) instead of any earlier one.

    Unchanged when `span` has no valid context (tracing off: `trace.INVALID_SPAN`).
    """
    if not span.get_span_context().is_valid:
        return tuple(headers)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    replaced = {*propagate.get_global_textmap().fields, *carrier}
    kept = [(name, value) for name, value in headers if name not in replaced]
    return (*kept, *((name, value.encode()) for name, value in carrier.items()))


def with_current_context(message: OutgoingMessage) -> OutgoingMessage:
    """`message` carrying the current span's context: how a message is kept for a later replay."""
    return replace(message, headers=with_context(message.headers, trace.get_current_span()))


# --- the publisher ------------------------------------------------------------------------------


@contextmanager
def sending(
    tracer: Tracer, messages: Sequence[OutgoingMessage], *, policy: str
) -> Iterator[tuple[Span, list[OutgoingMessage]]]:
    """A PRODUCER span for publishing `messages` (one, or one transaction), and the messages
    carrying its context. A `PublishError` raised inside marks the span failed.
    """
    first = messages[0]
    topics = {m.topic for m in messages}
    # The current span (an HTTP request) is the parent; without one (the relay), the context the
    # stored message carries, so the replay joins the trace of the request that made it.
    parent = (
        None if trace.get_current_span().get_span_context().is_valid else extract(first.headers)
    )
    attributes: dict[str, Any] = {
        SYSTEM: "kafka",
        OPERATION_TYPE: "send",
        OPERATION_NAME: "send",
        POLICY: policy,
    }
    if len(topics) == 1:
        attributes[DESTINATION] = first.topic
    if len(messages) == 1:
        attributes[MESSAGE_ID] = first.event_id
        attributes[BODY_SIZE] = len(first.value)
    else:
        attributes[BATCH_SIZE] = len(messages)
    name = f"send {first.topic}" if len(topics) == 1 else "send"
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        traced = [replace(m, headers=with_context(m.headers, span)) for m in messages]
        try:
            yield span, traced
        except PublishError as error:
            span.set_attributes({ERROR_TYPE: error.cause, ATTEMPTS: error.attempts})
            raise


def acknowledged(span: Span, receipts: Sequence[DeliveryReceipt]) -> None:
    """Record the attempts and, for a single acknowledged message, where the broker wrote it."""
    span.set_attribute(ATTEMPTS, max(r.attempts for r in receipts))
    if len(receipts) == 1 and receipts[0].confirmed:
        span.set_attribute(PARTITION, str(receipts[0].partition))
        span.set_attribute(OFFSET, receipts[0].offset or 0)


# --- the worker ---------------------------------------------------------------------------------


def processing(tracer: Tracer | None, record: Any, *, group: str) -> AbstractContextManager[Span]:
    """The CONSUMER span of handling `record`, a child of the context it carries (its
    producer's); `trace.INVALID_SPAN` when tracing is off."""
    if tracer is None:
        return nullcontext(trace.INVALID_SPAN)
    headers: Headers = list(record.headers or ())
    attributes: dict[str, Any] = {
        SYSTEM: "kafka",
        OPERATION_TYPE: "process",
        OPERATION_NAME: "process",
        DESTINATION: record.topic,
        PARTITION: str(record.partition),
        OFFSET: record.offset,
        CONSUMER_GROUP: group,
        BODY_SIZE: len(record.value or b""),
    }
    event_id = next((v for k, v in reversed(headers) if k == "event_id" and v), None)
    if event_id is not None:
        attributes[MESSAGE_ID] = event_id.decode("utf-8", errors="replace")[:64]
    return tracer.start_as_current_span(
        f"process {record.topic}",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def producing(
    tracer: Tracer | None, topic: str, *, message_id: str | None
) -> AbstractContextManager[Span]:
    """A PRODUCER span for a record the worker writes (a reply); INVALID_SPAN when off."""
    if tracer is None:
        return nullcontext(trace.INVALID_SPAN)
    attributes: dict[str, Any] = {
        SYSTEM: "kafka",
        OPERATION_TYPE: "send",
        OPERATION_NAME: "send",
        DESTINATION: topic,
    }
    if message_id is not None:
        attributes[MESSAGE_ID] = message_id
    return tracer.start_as_current_span(
        f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
    )


def step(tracer: Tracer | None, name: str) -> AbstractContextManager[Span]:
    """An INTERNAL child span (e.g. `send email`) whose failure the caller records with
    `failed()`: exceptions are not recorded, their messages may hold an address."""
    if tracer is None:
        return nullcontext(trace.INVALID_SPAN)
    return tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False)


def failed(span: Span, error_type: str) -> None:
    """Mark `span` failed, with the kind of error only."""
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(StatusCode.ERROR, error_type)
