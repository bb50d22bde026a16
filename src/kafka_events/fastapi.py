"""The FastAPI face: a lifespan, `Annotated` dependencies, and opt-in error handlers.

    kafka = KafkaEvents(KafkaConfig(...), store=SqlStore(url))
    app = FastAPI(lifespan=lifespan(kafka))          # composes with your own: app_lifespan=
    install_error_handlers(app)                      # optional: only this library's errors

    @app.post("/orders", status_code=202, responses=responses_for(BrokerUnavailable))
    async def place(order: OrderPlaced, events: EventsDep) -> DeliveryReceipt:
        return await events.emit(order, policy="orders")

The lifespan starts `kafka` before the application's own lifespan and stops it after, and
hands it to requests in the lifespan state (`request.state.kafka_events`): the dependencies
need nothing of the application's state.

The handlers answer only this library's exceptions, each with the status and JSON body of
`ERRORS` (`kafka_events.http_errors`, re-exported here), the one table that the OpenAPI
documentation (`responses_for`) is made from too, so the two cannot drift apart. The
application's own 404, 422 and 500 stay as it made them.
Bodies are `{"error": <kind>, "detail": <text>, ...}`; a 503 says `event_id`, `record_id` (the
stored copy the relay replays: do not resend) and `delivery` (`not_sent` or `unknown`), and
never a broker address or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from kafka_events import errors, idempotency
from kafka_events.client import KafkaEvents
from kafka_events.http_errors import (
    ERRORS,
    RETRY_AFTER_S,
    ErrorBody,
    ErrorDoc,
    ReplyTimeoutBody,
    UnavailableBody,
    _retry_after,
    doc_of,
    error_response,
    responses_for,
)
from kafka_events.producer.publish import KafkaPublisher
from kafka_events.store.base import MessageStore

__all__ = [
    "ERRORS",
    "RETRY_AFTER_S",
    "STATE_KEY",
    "ErrorBody",
    "ErrorDoc",
    "EventsDep",
    "ReplyTimeoutBody",
    "StoreDep",
    "UnavailableBody",
    "doc_of",
    "error_response",
    "get_kafka_events",
    "get_store",
    "install_error_handlers",
    "lifespan",
    "publisher_of",
    "responses_for",
]

logger = logging.getLogger(__name__)

STATE_KEY = "kafka_events"

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def lifespan(
    kafka: KafkaEvents, *, app_lifespan: Lifespan | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI lifespan that runs `kafka` around `app_lifespan` (yours, if any).

    The state your lifespan yields is merged into the request state beside `kafka_events`.
    """

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with kafka:
            state: dict[str, Any] = {STATE_KEY: kafka}
            if app_lifespan is None:
                yield state
                return
            async with app_lifespan(app) as own:
                yield {**state, **(own or {})}

    return run


# -- dependencies ----------------------------------------------------------------------------


async def get_kafka_events(request: Request) -> KafkaEvents:
    """The running `KafkaEvents` of this application (`async`: FastAPI runs a plain `def`
    dependency in a worker thread, which costs more than the lookup).

    Raises:
        PublisherStateError: the application was not given `lifespan(kafka)`.
    """
    found = getattr(request.state, STATE_KEY, None)
    if not isinstance(found, KafkaEvents):
        raise errors.PublisherStateError(
            "KafkaEvents is not running: create the app with lifespan=kafka_events.fastapi."
            "lifespan(kafka)"
        )
    return found


async def get_store(request: Request) -> MessageStore:
    """The message store of the running `KafkaEvents`."""
    return (await get_kafka_events(request)).store


def publisher_of(policy: str) -> Callable[[Request], Awaitable[KafkaPublisher]]:
    """A dependency giving the publisher of `policy`, like NestJS's named clients."""

    async def get_publisher(request: Request) -> KafkaPublisher:
        return (await get_kafka_events(request)).publisher(policy)

    return get_publisher


EventsDep = Annotated[KafkaEvents, Depends(get_kafka_events)]
"""Inject the running `KafkaEvents`: `async def route(events: EventsDep)`."""
StoreDep = Annotated[MessageStore, Depends(get_store)]
"""Inject the message store (e.g. for a status route)."""


def install_error_handlers(app: FastAPI, *, retry_after_s: int = RETRY_AFTER_S) -> None:
    """Answer this library's exceptions as `ERRORS` says; nothing else is touched."""

    async def publish_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.PublishError)
        doc = doc_of(type(exc), ERRORS)
        kind = doc.kind  # a deadline is `broker_unavailable`: the client's action is the same
        logger.warning(
            "event %s not delivered: %s (%s); record %s", exc.event_id, kind, exc, exc.record_id
        )
        detail = str(exc)
        if exc.record_id is None and doc.status == 503:
            detail += (
                "; not kept: retry after Retry-After, with the same Idempotency-Key (send one), "
                "so that a copy that reached Kafka all the same is deduplicated"
            )
        return error_response(
            doc.status,
            kind,
            detail,
            headers=_retry_after(doc, retry_after_s),
            event_id=exc.event_id,
            record_id=exc.record_id,
            delivery="not_sent" if exc.sent is False else "unknown",
        )

    async def replies_unavailable(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("request-reply refused: %s", exc)
        doc = ERRORS[errors.RepliesUnavailable]
        return error_response(
            doc.status,
            "replies_unavailable",
            "the reply topic is not being read; nothing was sent",
            headers=_retry_after(doc, retry_after_s),
        )

    async def as_documented(_: Request, exc: Exception) -> JSONResponse:
        doc = doc_of(type(exc), ERRORS)
        return error_response(
            doc.status, doc.kind, str(exc), headers=_retry_after(doc, retry_after_s)
        )

    async def store_error(_: Request, exc: Exception) -> JSONResponse:
        logger.error("the message store failed: %s", exc)
        doc = ERRORS[errors.StoreError]
        return error_response(
            doc.status,
            "store_error",
            "the message store could not answer; retry later",
            headers=_retry_after(doc, retry_after_s),
        )

    async def published_without_reply(_: Request, exc: Exception) -> JSONResponse:
        """ReplyTimeout, MalformedReply: published (the receipt says where), no usable reply."""
        assert isinstance(exc, errors.ReplyTimeout | errors.MalformedReply)
        level = logging.WARNING if isinstance(exc, errors.ReplyTimeout) else logging.ERROR
        logger.log(level, "event %s: %s", exc.receipt.event_id, exc)
        doc = doc_of(type(exc), ERRORS)
        return error_response(
            doc.status,
            doc.kind,
            str(exc),
            event_id=exc.receipt.event_id,
            receipt=exc.receipt.model_dump(mode="json"),
        )

    async def publisher_state(_: Request, exc: Exception) -> JSONResponse:
        logger.error("publisher used outside its lifetime: %s", exc)
        doc = ERRORS[errors.PublisherStateError]
        return error_response(
            doc.status,
            errors.BrokerUnavailable.kind,
            "the service is starting or stopping",
            headers=_retry_after(doc, retry_after_s),
        )

    app.add_exception_handler(errors.PublishError, publish_error)
    app.add_exception_handler(errors.RepliesUnavailable, replies_unavailable)
    app.add_exception_handler(errors.ReplyTimeout, published_without_reply)
    app.add_exception_handler(errors.MalformedReply, published_without_reply)
    app.add_exception_handler(errors.StoreError, store_error)
    for misuse in (
        idempotency.InvalidIdempotencyKey,
        idempotency.IdempotencyKeyInUse,
        idempotency.IdempotencyKeyReused,
    ):
        app.add_exception_handler(misuse, as_documented)
    app.add_exception_handler(errors.PublisherStateError, publisher_state)
