"""The error table: how each of the library's exceptions is answered over HTTP, and its
OpenAPI documentation, from one place (`ERRORS`), so the two cannot drift apart.

`kafka_events.fastapi.install_error_handlers` answers with it; `responses_for` documents a
route with it. Bodies are `{"error": <kind>, "detail": <text>, ...}`; a 503 says `event_id`,
`record_id` (the stored copy the relay replays: do not resend) and `delivery` (`not_sent` or
`unknown`), and never a broker address or a stack trace.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kafka_events import errors, idempotency

RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable kind of error.")
    detail: str = Field(description="What went wrong, for a person.")


class UnavailableBody(ErrorBody):
    event_id: str = Field(description="Id of the event that was not confirmed as delivered.")
    record_id: str | None = Field(
        description="Id of the stored copy that the relay replays once Kafka answers; null "
        "when the message was not kept."
    )
    delivery: Literal["not_sent", "unknown"] = Field(
        description="not_sent: it never reached a broker. unknown: a broker may still write it "
        "(the deadline passed while it was in flight); consumers deduplicate on event_id."
    )


class ReplyTimeoutBody(ErrorBody):
    event_id: str = Field(description="Id of the published event.")
    receipt: dict[str, Any] = Field(
        description="The request's receipt: it was published; only the reply is missing."
    )


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    """How one exception is answered: status, body model, documentation, example, headers."""

    status: int
    model: type[BaseModel]
    description: str
    example: dict[str, Any]
    retry_after: bool = False
    headers: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The `error` of the body."""
        return str(self.example["error"])

    def described(self, description: str) -> ErrorDoc:
        """The same answer, documented in an application's own words."""
        return replace(self, description=description)


_EVENT = "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a"
_RECORD = "4d0c1c1e-2b1a-4a63-8d0b-0c4b1e0f9a77"


def _unavailable(kind: str, detail: str, *, record_id: str | None) -> dict[str, Any]:
    return {
        "error": kind,
        "detail": detail,
        "event_id": _EVENT,
        "record_id": record_id,
        "delivery": "not_sent",
    }


ERRORS: dict[type[BaseException], ErrorDoc] = {
    errors.RecordTooLarge: ErrorDoc(
        413,
        UnavailableBody,
        "The message would exceed Kafka's size limit; nothing was sent.",
        _unavailable(
            "record_too_large",
            "the message is larger than the producer's or the broker's limit",
            record_id=None,
        ),
    ),
    errors.EncodingError: ErrorDoc(
        422,
        UnavailableBody,
        "The event could not be serialised; nothing was sent or kept.",
        _unavailable("unencodable_event", "the event cannot be serialised", record_id=None),
    ),
    errors.PublishRejected: ErrorDoc(
        503,
        UnavailableBody,
        "Kafka refused the message for a reason retrying cannot fix until an operator acts "
        "(e.g. authorisation). The message is recorded (`record_id`) for replay once fixed.",
        _unavailable(
            "publish_rejected",
            "rejected by the broker: TopicAuthorizationFailedError",
            record_id=_RECORD,
        ),
    ),
    errors.StoreUnavailable: ErrorDoc(
        503,
        UnavailableBody,
        "The policy uses the outbox and the store could not keep the event in time; nothing "
        "was sent or kept: retry after `Retry-After`.",
        _unavailable(
            "store_unavailable",
            "the outbox could not store the event; nothing was sent",
            record_id=None,
        ),
        retry_after=True,
    ),
    idempotency.InvalidIdempotencyKey: ErrorDoc(
        400,
        ErrorBody,
        "The `Idempotency-Key` header is not 1 to 255 printable ASCII characters: nothing "
        "was sent.",
        {
            "error": "invalid_idempotency_key",
            "detail": "Idempotency-Key must be 1 to 255 printable ASCII characters, e.g. a "
            "quoted UUID",
        },
    ),
    idempotency.IdempotencyKeyInUse: ErrorDoc(
        409,
        ErrorBody,
        "A request with this `Idempotency-Key` is still in progress: retry after it answers.",
        {
            "error": "idempotency_key_in_use",
            "detail": "a request with this Idempotency-Key is in progress; retry after it answers",
        },
        retry_after=True,
    ),
    idempotency.IdempotencyKeyReused: ErrorDoc(
        422,
        ErrorBody,
        "This `Idempotency-Key` was used for a different request: nothing was sent; use a new key.",
        {
            "error": "idempotency_key_reused",
            "detail": "this Idempotency-Key was used for a different request; use a new key",
        },
    ),
    errors.StoreError: ErrorDoc(
        503,
        ErrorBody,
        "The message store could not answer in time (its database failed or is busy): retry "
        "after `Retry-After`.",
        {"error": "store_error", "detail": "the message store could not answer; retry later"},
        retry_after=True,
    ),
    errors.BrokerUnavailable: ErrorDoc(
        503,
        UnavailableBody,
        "Kafka did not acknowledge the message within the deadline, retries included. The "
        "message is recorded (`record_id`) and replayed once Kafka answers: do not resend it. "
        "When `record_id` is null it was not kept: retry after `Retry-After`.",
        _unavailable(
            "broker_unavailable",
            "not acknowledged within 5000 ms (attempt 3, waiting to connect)",
            record_id=_RECORD,
        ),
        retry_after=True,
    ),
    errors.PublishError: ErrorDoc(
        503,
        UnavailableBody,
        "The message was not confirmed as delivered; `record_id` says whether it is kept.",
        _unavailable("broker_unavailable", "not delivered", record_id=_RECORD),
        retry_after=True,
    ),
    errors.RepliesUnavailable: ErrorDoc(
        503,
        ErrorBody,
        "Request-reply while replies cannot be read (Kafka unreachable since start-up); "
        "nothing was sent. Retry after `Retry-After`.",
        {"error": "replies_unavailable", "detail": "the reply topic is not being read"},
        retry_after=True,
    ),
    errors.ReplyTimeout: ErrorDoc(
        504,
        ReplyTimeoutBody,
        "The request was published (see `receipt`), but no reply came in time. It may still "
        "be handled: do not resend.",
        {
            "error": "reply_timeout",
            "detail": "no reply within 10000 ms",
            "event_id": _EVENT,
            "receipt": {"topic": "orders.placed", "partition": 0, "offset": 42},
        },
    ),
    errors.MalformedReply: ErrorDoc(
        502,
        ReplyTimeoutBody,
        "The request was published (see `receipt`) and its consumer answered, but the answer "
        "is not a reply. It may have been handled: do not resend.",
        {
            "error": "malformed_reply",
            "detail": "the consumer's reply could not be read (malformed reply: TypeError)",
            "event_id": _EVENT,
            "receipt": {"topic": "orders.placed", "partition": 0, "offset": 42},
        },
    ),
    errors.PublisherStateError: ErrorDoc(
        503,
        ErrorBody,
        "The service is starting or stopping; retry after `Retry-After`.",
        {"error": "broker_unavailable", "detail": "the service is starting or stopping"},
        retry_after=True,
    ),
}
"""The library's exceptions and how they are answered; `responses_for` documents them."""

_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def doc_of(
    exc_type: type[BaseException], table: Mapping[type[BaseException], ErrorDoc]
) -> ErrorDoc:
    """The entry of `exc_type`, or of its nearest documented base class."""
    for cls in exc_type.__mro__:
        if cls in table:
            return table[cls]
    raise KeyError(f"{exc_type.__name__} is not in the error table")


def responses_for(
    *exc_types: type[BaseException],
    table: Mapping[type[BaseException], ErrorDoc] = ERRORS,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route, built from the exceptions it can raise.

    `table` may extend or re-describe `ERRORS` with an application's own entries.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    models: dict[int, list[type[BaseModel]]] = {}
    for exc_type in exc_types:
        doc = doc_of(exc_type, table)
        entry = responses.setdefault(
            doc.status, {"model": doc.model, "description": doc.description, "content": {}}
        )
        headers = {**doc.headers, **(_RETRY_AFTER_HEADER if doc.retry_after else {})}
        if headers:
            entry.setdefault("headers", {}).update(headers)
        models.setdefault(doc.status, []).append(doc.model)
        if doc.description not in entry["description"]:
            entry["description"] = f"{entry['description']} Or: {doc.description}"
        examples = entry["content"].setdefault("application/json", {}).setdefault("examples", {})
        examples[doc.example["error"]] = {"value": doc.example}
    for code, bodies in models.items():
        # Bodies of one status may differ (a 503 with or without `event_id`): document each.
        responses[code]["model"] = functools.reduce(operator.or_, list(dict.fromkeys(bodies)))
    return responses


def error_response(
    status_code: int,
    error: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A JSON error body `{"error", "detail", ...extra}`."""
    return JSONResponse(
        {"error": error, "detail": detail, **extra},
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


def _retry_after(doc: ErrorDoc, retry_after_s: int) -> dict[str, str] | None:
    return {"Retry-After": str(retry_after_s)} if doc.retry_after else None
