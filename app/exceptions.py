"""Errors to HTTP responses, in one table; and the OpenAPI documentation of each.

The library's own errors (`kafka_events.errors`) are answered by its handlers, with the
statuses and bodies of `kafka_events.fastapi.ERRORS`; this module adds the service's errors
to that table, re-describes some in the service's terms, and answers the rest.

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
    503     rate_limit_unavailable  RateLimitUnavailable (Redis, the rate limit's store, did not
                                answer and RATE_LIMIT__ON_REDIS_ERROR=closed; nothing was sent)
    429     rate_limited        RateLimited (too many requests for one address; Retry-After)
    504     reply_timeout       ReplyTimeout (published, but no reply in time; carries the receipt)
    502     malformed_reply     MalformedReply (published, but the reply is not one; the receipt)
    503     not_ready           readiness probe failing
    404/405 not_found, method_not_allowed   routing
    500     internal_error      anything unexpected (logged with its trace, never returned)
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.ratelimit import RateLimited, RateLimitUnavailable
from kafka_events import errors
from kafka_events import fastapi as kafka_fastapi
from kafka_events.fastapi import ErrorBody, ErrorDoc, error_response

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5

__all__ = ["ERRORS", "ApiError", "ErrorBody", "error_response", "install", "responses_for"]


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where in the request the problem is.")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    errors: list[FieldError]


class RateLimitedBody(ErrorBody):
    retry_after_s: int = Field(description="Seconds until a slot frees (as `Retry-After`).")


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


_LIBRARY = kafka_fastapi.ERRORS

ERRORS: dict[type[BaseException], ErrorDoc] = {
    **_LIBRARY,
    errors.RepliesUnavailable: _LIBRARY[errors.RepliesUnavailable].described(
        "`wait_for=delivery` while replies cannot be read (Kafka unreachable since start-up); "
        "nothing was sent. Retry after `Retry-After`, or omit `wait_for`."
    ),
    errors.ReplyTimeout: _LIBRARY[errors.ReplyTimeout].described(
        "`wait_for=delivery`: the request was published (see `receipt`), but the worker did not "
        "reply within `REPLY__TIMEOUT_MS`. The email may still be sent: do not resend."
    ),
    errors.MalformedReply: _LIBRARY[errors.MalformedReply].described(
        "`wait_for=delivery`: the request was published (see `receipt`), but the worker's "
        "answer could not be read. The email may have been sent: do not resend."
    ),
    errors.StoreUnavailable: _LIBRARY[errors.StoreUnavailable].described(
        "The feature's policy uses the outbox and the store could not keep the event in time; "
        "nothing was sent or kept: retry after `Retry-After`."
    ),
    errors.BrokerUnavailable: _LIBRARY[errors.BrokerUnavailable].described(
        "Kafka did not acknowledge the message within the deadline, retries included. The "
        "message is recorded (`record_id`; follow it at GET /events/{event_id}) and replayed "
        "once Kafka answers: do not resend it. When `record_id` is null it was not kept: retry "
        "after `Retry-After`."
    ),
    RequestInvalid: ErrorDoc(
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
    BodyTooLarge: ErrorDoc(
        413,
        ErrorBody,
        "The request body is larger than the server accepts.",
        {"error": "body_too_large", "detail": "request body exceeds 16384 bytes"},
    ),
    RateLimited: ErrorDoc(
        429,
        RateLimitedBody,
        "Too many requests for this address within `RATE_LIMIT__WINDOW_S` (counted per server "
        "process, or by all of them with `RATE_LIMIT__REDIS_URL`); nothing was sent. Retry "
        "after `Retry-After` seconds.",
        {
            "error": "rate_limited",
            "detail": "at most 5 verification emails per address every 3600 s; retry in 1712 s",
            "retry_after_s": 1712,
        },
        headers={
            "Retry-After": {
                "description": "Seconds until the address may ask again.",
                "schema": {"type": "integer", "minimum": 1},
                "example": 1712,
            }
        },
    ),
    RateLimitUnavailable: ErrorDoc(
        503,
        ErrorBody,
        "The rate limit's shared store (Redis) did not answer in time and the service fails "
        "closed (`RATE_LIMIT__ON_REDIS_ERROR=closed`); nothing was sent: retry after "
        "`Retry-After`.",
        {"error": "rate_limit_unavailable", "detail": str(RateLimitUnavailable())},
        retry_after=True,
    ),
}
"""Every error a route of the service can answer: the library's, and the service's own."""


def responses_for(*exception_types: type[BaseException]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route, built from the exceptions it can raise."""
    return kafka_fastapi.responses_for(*exception_types, table=ERRORS)


async def _rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    return error_response(
        ERRORS[RateLimited].status,
        "rate_limited",
        str(exc),
        headers={"Retry-After": str(exc.retry_after_s)},
        retry_after_s=exc.retry_after_s,
    )


async def _rate_limit_unavailable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimitUnavailable)
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return error_response(503, "rate_limit_unavailable", str(exc), headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.kind, exc.detail, headers=exc.headers)


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
    """Register every handler on `app`: the library's, then the service's."""
    kafka_fastapi.install_error_handlers(app, retry_after_s=RETRY_AFTER_S)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(RateLimitUnavailable, _rate_limit_unavailable)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
