"""Domain errors to HTTP responses, in one place; and the OpenAPI documentation of each.

Every error body is JSON `{"error": <kind>, "detail": <text>, ...}`. No response carries a stack
trace, an exception's own text from a library, or a broker address.

    status  error               raised by
    413     body_too_large      BodyTooLarge (request body over `API__MAX_BODY_BYTES`)
    413     record_too_large    RecordTooLarge (message over the producer's/broker's limit)
    422     invalid_request     RequestInvalid (FastAPI's RequestValidationError, or a body it
                                cannot decode, which FastAPI itself answers 400)
    422     unencodable_event   EncodingError (the event cannot be serialised)
    503     publish_rejected    PublishRejected (non-retriable broker error; recorded)
    503     store_unavailable   StoreUnavailable (outbox could not store it; nothing sent)
    503     broker_unavailable  BrokerUnavailable, DeliveryTimeout (recorded), PublisherStateError
    503     replies_unavailable RepliesUnavailable (wait_for=delivery while the reply topic is not
                                read; nothing was sent)
    429     rate_limited        RateLimited (too many requests for one address; Retry-After)
    504     reply_timeout       ReplyTimeout (published, but no reply in time; carries the receipt)
    503     not_ready           readiness probe failing
    404/405 not_found, method_not_allowed   routing
    500     internal_error      anything unexpected (logged with its trace, never returned)
"""

from __future__ import annotations

import functools
import logging
import operator
from typing import Any, Literal

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.kafka import errors
from app.kafka.replies import RepliesUnavailable, ReplyTimeout
from app.ratelimit import RateLimited

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable kind of error.")
    detail: str = Field(description="What went wrong, for a person.")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where in the request the problem is.")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    errors: list[FieldError]


class UnavailableBody(ErrorBody):
    event_id: str = Field(description="Id of the event that was not confirmed as delivered.")
    record_id: str | None = Field(
        description="Id of the stored copy that the relay replays once Kafka answers (follow "
        "it at GET /events/{event_id}); null when the message was not kept."
    )
    delivery: Literal["not_sent", "unknown"] = Field(
        description="not_sent: it never reached a broker. unknown: a broker may still write it "
        "(the deadline passed while it was in flight); consumers deduplicate on event_id."
    )


class RateLimitedBody(ErrorBody):
    retry_after_s: int = Field(description="Seconds until a slot frees (as `Retry-After`).")


class ReplyTimeoutBody(ErrorBody):
    event_id: str = Field(description="Id of the published event.")
    receipt: dict[str, Any] = Field(
        description="The request's receipt: it was published; only the reply is missing."
    )


class ApiError(Exception):
    """An HTTP-level refusal raised by a route (not found, unauthorised...), with its kind."""

    def __init__(
        self, status_code: int, kind: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.kind = kind
        self.detail = detail
        self.headers = headers


_GENERIC: dict[int, tuple[str, str]] = {
    401: ("unauthorized", "A valid `Authorization: Bearer <token>` header is required."),
    403: ("admin_disabled", "The admin routes are off: no ADMIN__TOKEN is set."),
    404: ("not_found", "Nothing with this id."),
    422: ("invalid_request", "The request is invalid."),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for plain `ApiError`s of these status codes."""
    return {
        code: {
            "model": ErrorBody,
            "description": _GENERIC[code][1],
            "content": {
                "application/json": {
                    "example": {"error": _GENERIC[code][0], "detail": _GENERIC[code][1]}
                }
            },
        }
        for code in codes
    }


class RequestInvalid(Exception):
    """The request body or parameters fail validation (documentation anchor for 422)."""


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit (documentation anchor for 413)."""


# exception -> (status, body model, description, example body)
_DOCS: dict[type[BaseException], tuple[int, type[BaseModel], str, dict[str, Any]]] = {
    RequestInvalid: (
        422,
        ValidationErrorBody,
        "The request is invalid; `errors` lists each problem.",
        {
            "error": "invalid_request",
            "detail": "1 invalid field",
            "errors": [
                {
                    "loc": ["body", "email"],
                    "msg": "value is not a valid email address",
                    "type": "value_error",
                }
            ],
        },
    ),
    BodyTooLarge: (
        413,
        ErrorBody,
        "The request body is larger than the server accepts.",
        {"error": "body_too_large", "detail": "request body exceeds 16384 bytes"},
    ),
    errors.RecordTooLarge: (
        413,
        UnavailableBody,
        "The message would exceed Kafka's size limit; nothing was sent.",
        {
            "error": "record_too_large",
            "detail": "the message is larger than the producer's or the broker's limit",
            "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
            "record_id": None,
            "delivery": "not_sent",
        },
    ),
    errors.EncodingError: (
        422,
        UnavailableBody,
        "The event could not be serialised; nothing was sent or kept.",
        {
            "error": "unencodable_event",
            "detail": "the event cannot be serialised as JSON",
            "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
            "record_id": None,
            "delivery": "not_sent",
        },
    ),
    errors.PublishRejected: (
        503,
        UnavailableBody,
        "Kafka refused the message for a reason retrying cannot fix until an operator acts "
        "(e.g. authorisation). The message is recorded (`record_id`) for replay once fixed.",
        {
            "error": "publish_rejected",
            "detail": "rejected by the broker: TopicAuthorizationFailedError",
            "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
            "record_id": "4d0c1c1e-2b1a-4a63-8d0b-0c4b1e0f9a77",
            "delivery": "not_sent",
        },
    ),
    RepliesUnavailable: (
        503,
        ErrorBody,
        "`wait_for=delivery` while replies cannot be read (Kafka unreachable since start-up); "
        "nothing was sent. Retry after `Retry-After`, or omit `wait_for`.",
        {"error": "replies_unavailable", "detail": "the reply topic is not being read"},
    ),
    ReplyTimeout: (
        504,
        ReplyTimeoutBody,
        "`wait_for=delivery`: the request was published (see `receipt`), but the worker did not "
        "reply within `REPLY__TIMEOUT_MS`. The email may still be sent: do not resend.",
        {
            "error": "reply_timeout",
            "detail": "no reply within 10000 ms",
            "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
            "receipt": {"topic": "send.verification.email", "partition": 0, "offset": 42},
        },
    ),
    RateLimited: (
        429,
        RateLimitedBody,
        "Too many requests for this address within `RATE_LIMIT__WINDOW_S` (counted per server "
        "process); nothing was sent. Retry after `Retry-After` seconds.",
        {
            "error": "rate_limited",
            "detail": "at most 5 verification emails per address every 3600 s; retry in 1712 s",
            "retry_after_s": 1712,
        },
    ),
    errors.StoreUnavailable: (
        503,
        UnavailableBody,
        "The feature's policy uses the outbox and the store could not keep the event in time; "
        "nothing was sent or kept: retry after `Retry-After`.",
        {
            "error": "store_unavailable",
            "detail": "the outbox could not store the event; nothing was sent",
            "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
            "record_id": None,
            "delivery": "not_sent",
        },
    ),
    errors.BrokerUnavailable: (
        503,
        UnavailableBody,
        "Kafka did not acknowledge the message within the deadline, retries included. The "
        "message is recorded (`record_id`) and replayed once Kafka answers: do not resend it. "
        "When `record_id` is null it was not kept: retry after `Retry-After`.",
        {
            "error": "broker_unavailable",
            "detail": "not acknowledged within 5000 ms (attempt 3, waiting to connect)",
            "event_id": "0b6f3f0e-6f1e-4c1b-9a53-5b1f0d7b0c2a",
            "record_id": "4d0c1c1e-2b1a-4a63-8d0b-0c4b1e0f9a77",
            "delivery": "not_sent",
        },
    ),
}


# exception -> response headers it always carries
_HEADERS: dict[type[BaseException], dict[str, dict[str, Any]]] = {
    RateLimited: {
        "Retry-After": {
            "description": "Seconds until the address may ask again.",
            "schema": {"type": "integer", "minimum": 1},
            "example": 1712,
        }
    },
}


def responses_for(*exception_types: type[BaseException]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route, built from the exceptions it can raise."""
    responses: dict[int | str, dict[str, Any]] = {}
    models: dict[int, list[type[BaseModel]]] = {}
    for exc_type in exception_types:
        code, model, description, example = _DOCS[exc_type]
        entry = responses.setdefault(
            code, {"model": model, "description": description, "content": {}}
        )
        if exc_type in _HEADERS:
            entry.setdefault("headers", {}).update(_HEADERS[exc_type])
        models.setdefault(code, []).append(model)
        if entry["description"] != description:
            entry["description"] = f"{entry['description']} Or: {description}"
        examples = entry["content"].setdefault("application/json", {}).setdefault("examples", {})
        examples[example["error"]] = {"value": example}
    for code, bodies in models.items():
        # Bodies of one status may differ (a 503 with or without `event_id`): document each.
        distinct = list(dict.fromkeys(bodies))
        responses[code]["model"] = functools.reduce(operator.or_, distinct)
    return responses


def error_response(
    status_code: int,
    error: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail, **extra}, status_code=status_code, headers=headers
    )


async def _publish_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.PublishError)
    delivery = "not_sent" if exc.sent is False else "unknown"
    if isinstance(exc, errors.RecordTooLarge):
        code, kind, headers = 413, exc.kind, None
    elif isinstance(exc, errors.EncodingError):
        code, kind, headers = 422, exc.kind, None
    elif isinstance(exc, errors.PublishRejected):
        code, kind, headers = 503, exc.kind, None  # no Retry-After: an operator must act
    elif isinstance(exc, errors.StoreUnavailable):
        code, kind = 503, exc.kind
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    else:
        code, kind = 503, errors.BrokerUnavailable.kind
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    logger.warning(
        "event %s not delivered: %s (%s); record %s", exc.event_id, kind, exc, exc.record_id
    )
    return error_response(
        code,
        kind,
        str(exc),
        headers=headers,
        event_id=exc.event_id,
        record_id=exc.record_id,
        delivery=delivery,
    )


async def _replies_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("request-reply refused: %s", exc)
    return error_response(
        503,
        "replies_unavailable",
        "the reply topic is not being read; nothing was sent",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    return error_response(
        429,
        "rate_limited",
        str(exc),
        headers={"Retry-After": str(exc.retry_after_s)},
        retry_after_s=exc.retry_after_s,
    )


async def _reply_timeout(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ReplyTimeout)
    logger.warning("event %s: %s", exc.receipt.event_id, exc)
    return error_response(
        504,
        "reply_timeout",
        str(exc),
        event_id=exc.receipt.event_id,
        receipt=exc.receipt.model_dump(mode="json"),
    )


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.kind, exc.detail, headers=exc.headers)


async def _publisher_state(_: Request, exc: Exception) -> JSONResponse:
    logger.error("publisher used outside its lifetime: %s", exc)
    return error_response(
        503,
        errors.BrokerUnavailable.kind,
        "the service is starting or stopping",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(item.get("loc", ())), "msg": str(item.get("msg", "")), "type": item["type"]}
        for item in exc.errors()
    ]
    count = len(problems)
    return error_response(
        422,
        "invalid_request",
        f"{count} invalid field{'s' if count != 1 else ''}",
        errors=problems,
    )


def _allowed_methods(request: Request) -> str | None:
    """Every documented method of the requested path, for a 405's `Allow` header.

    Routing reports only the methods of the first route matching the path, so a path served by
    two routes (GET and DELETE /admin/messages) would advertise one of them. As in OpenAPI,
    concrete paths win over templated ones (/admin/messages/replay over .../{record_id}).
    """
    given = request.scope["path"].strip("/").split("/")
    matches: dict[int, set[str]] = {}  # templated segments -> methods
    for template, operations in request.app.openapi()["paths"].items():
        parts = template.strip("/").split("/")
        if len(parts) == len(given) and all(
            part.startswith("{") or part == segment
            for part, segment in zip(parts, given, strict=True)
        ):
            templated = sum(part.startswith("{") for part in parts)
            matches.setdefault(templated, set()).update(m.upper() for m in operations)
    return ", ".join(sorted(matches[min(matches)])) if matches else None


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8, say): invalid like bad JSON.
        return error_response(
            422,
            "invalid_request",
            "1 invalid field",
            errors=[{"loc": ["body"], "msg": "the body is not valid JSON", "type": "json_invalid"}],
        )
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405 and (allowed := _allowed_methods(request)) is not None:
        headers = {**(headers or {}), "Allow": allowed}
    kinds = {
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
        415: "unsupported_media_type",
    }
    kind = kinds.get(exc.status_code, "http_error")
    return error_response(exc.status_code, kind, str(exc.detail), headers=headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(
        status.HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "an unexpected error occurred"
    )


def install(app: FastAPI) -> None:
    """Register every handler on `app`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(errors.PublishError, _publish_error)
    app.add_exception_handler(errors.PublisherStateError, _publisher_state)
    app.add_exception_handler(RepliesUnavailable, _replies_unavailable)
    app.add_exception_handler(ReplyTimeout, _reply_timeout)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
