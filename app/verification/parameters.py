"""The two optional parameters of `POST /verification-emails`, read from the request itself.

Declared as FastAPI `Header` and `Query` parameters they cost about 50 µs of every request
(FastAPI builds and validates a model for each); read here they cost about 3 µs. Their
OpenAPI description (`OPENAPI`) and their errors (`422 invalid_request`, with pydantic's
error types and locations) stay as FastAPI made them.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError

__all__ = ["IDEMPOTENCY_KEY", "OPENAPI", "WAIT_FOR", "idempotency_key", "wait_for_delivery"]

IDEMPOTENCY_KEY: Final = "Idempotency-Key"
WAIT_FOR: Final = "wait_for"
# kafka_events.idempotency.parse_key's rule, so that the schema says which keys are taken
_KEY_PATTERN: Final = r'^(?:"[ !#-\[\]-~]{1,255}"|[ !#-\[\]-~]{1,255})$'
_KEY = re.compile(_KEY_PATTERN)

_KEY_DESCRIPTION: Final = (
    'Makes a retry safe (IETF httpapi draft "The Idempotency-Key HTTP Header Field"). Send a '
    "new unique key (e.g. a quoted UUID) with each new request, and the same key when you "
    "retry it: the retry publishes the same `event_id` (the worker sends one email), and "
    "within `IDEMPOTENCY__WINDOW_S` it gets the first answer again, with "
    "`Idempotent-Replayed: true`. A 503 with `record_id: null` is not kept: retry it with the "
    "same key. The same key with a different body: 422 `idempotency_key_reused`; while its "
    "first request is in progress: 409 `idempotency_key_in_use`. Not 1 to 255 printable "
    "ASCII characters (quoted or not): 422 `invalid_request`."
)
_WAIT_DESCRIPTION: Final = (
    "`delivery`: wait (at most `REPLY__TIMEOUT_MS`) for the worker's reply and answer 200 "
    "with it (request-reply). Omitted: answer 202 as soon as Kafka has the event (emit)."
)

# The route's `openapi_extra`: what FastAPI generated for the declared parameters.
OPENAPI: Final[dict[str, Any]] = {
    "parameters": [
        {
            "name": WAIT_FOR,
            "in": "query",
            "required": False,
            "schema": {
                "anyOf": [{"const": "delivery", "type": "string"}, {"type": "null"}],
                "description": _WAIT_DESCRIPTION,
                "title": "Wait For",
            },
            "description": _WAIT_DESCRIPTION,
        },
        {
            "name": IDEMPOTENCY_KEY,
            "in": "header",
            "required": False,
            "schema": {
                "anyOf": [{"type": "string", "pattern": _KEY_PATTERN}, {"type": "null"}],
                "description": _KEY_DESCRIPTION,
                "title": IDEMPOTENCY_KEY,
            },
            "description": _KEY_DESCRIPTION,
        },
    ]
}


def idempotency_key(request: Request) -> str | None:
    """The `Idempotency-Key` header as sent (the first, if repeated), or None.

    Raises:
        RequestValidationError: it does not match the pattern (422 `invalid_request`).
    """
    value = request.headers.get(IDEMPOTENCY_KEY)
    if value is None or _KEY.match(value):
        return value
    raise RequestValidationError(
        [
            {
                "type": "string_pattern_mismatch",
                "loc": ("header", IDEMPOTENCY_KEY),
                "msg": f"String should match pattern '{_KEY_PATTERN}'",
                "input": value,
                "ctx": {"pattern": _KEY_PATTERN},
            }
        ]
    )


def wait_for_delivery(request: Request) -> bool:
    """Whether `?wait_for=delivery` was asked (the last, if repeated).

    Raises:
        RequestValidationError: `wait_for` has another value (422 `invalid_request`).
    """
    if not request.scope["query_string"]:
        return False
    value = request.query_params.get(WAIT_FOR)
    if value is None:
        return False
    if value == "delivery":
        return True
    raise RequestValidationError(
        [
            {
                "type": "literal_error",
                "loc": ("query", WAIT_FOR),
                "msg": "Input should be 'delivery'",
                "input": value,
                "ctx": {"expected": "'delivery'"},
            }
        ]
    )
