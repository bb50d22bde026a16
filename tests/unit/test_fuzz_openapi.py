"""Property-based fuzzing of every operation in the app's OpenAPI schema (schemathesis).

Cases are generated from the schema itself (examples, valid and invalid bodies, parameters and
headers) and sent to the app in-process, its real lifespan running. Every response must be
documented (status code, content type, headers, body schema); valid requests must not be
refused and invalid ones not accepted; and no response may be a 5xx other than the
documented 503 and 504. The admin token is set; every other admin case carries it, the rest
send what was generated (401).

Two runs: against a closed broker port (fast; every publish ends in a recorded 503), and a
shorter one against the session's real broker with a topic of its own (publishes succeed).
Deterministic (`derandomize`) and bounded by `max_examples` per operation.

Invalid cases are drawn from the bounds the schema declares, so a parameter without bounds is
never sent a value past them: `tests/unit/test_parameter_bounds.py` checks that every query and
path parameter declares its bounds, and sends each one values past 32 and 64 bits, long strings
and NULs (with SQLite there, with PostgreSQL in `tests/integration/`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python.asgi import shutdown_lifespans

from app.config import RateLimitSettings, ReplySettings, Settings
from app.main import create_app
from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic
from tests.helpers.service import make_settings
from tests.helpers.waiting import closed_port

# The app's background tasks (reconnection and relay jitter), on schemathesis' event-loop
# thread, use the global `random` while hypothesis draws cases; hypothesis takes that for a
# strategy using it. Generation stays deterministic: it does not read that state.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
# operation -> cases sent, over the whole session (printed at the end of the module)
CASES: Counter[str] = Counter()

# schemathesis' default expected statuses, plus 413: a body over API__MAX_BODY_BYTES (a setting
# the schema cannot know) is refused so, valid or not.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # The server errors the schema documents (broker unavailable, reply timeout) only.
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]},
            "positive_data_acceptance": {"expected-statuses": ACCEPTED},
            "negative_data_rejection": {"expected-statuses": [*REFUSED, "5xx"]},
        },
        "operations": [
            {
                # `format: email` cannot say that email-validator refuses special-use domains
                # (.test, .localhost, .invalid), which the generator produces: 422 is right.
                "include-path": "/verification-emails",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
            }
        ],
    }
)
# The schema as the app publishes it; building an app connects nothing (its lifespan does).
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None)).openapi(), config=CONFIG
)
HYPOTHESIS: dict[str, Any] = {
    "derandomize": True,
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def _started(settings_: Settings) -> Iterator[FastAPI]:
    # The rate limit on, low (so 429s happen too), and the admin routes with a token.
    app = create_app(
        settings_.model_copy(update={"rate_limit": RateLimitSettings(per_email=3, window_s=60)})
    )
    try:
        yield app  # schemathesis starts its lifespan, on an event-loop thread, at the first case
    finally:
        shutdown_lifespans()


@pytest.fixture(scope="module")
def closed_broker_app() -> Iterator[FastAPI]:
    yield from _started(
        make_settings(
            f"127.0.0.1:{closed_port()}",
            "t-fuzz",
            admin_token=ADMIN_TOKEN,
            delivery_timeout_ms=200,
            connect_timeout_ms=200,
        )
    )


@pytest.fixture(scope="module")
def broker_app(kafka_broker: KafkaCluster) -> Iterator[FastAPI]:
    topic = asyncio.run(create_topic(kafka_broker.bootstrap_servers, f"t-fuzz-{uuid.uuid4().hex}"))
    settings_ = make_settings(kafka_broker.bootstrap_servers, topic, admin_token=ADMIN_TOKEN)
    # No worker runs: wait_for=delivery answers 504 after this short wait.
    reply = ReplySettings(topic=f"{topic}.reply", timeout_ms=300, replication_factor=1)
    yield from _started(settings_.model_copy(update={"reply": reply}))


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    for operation, count in sorted(CASES.items()):
        print(f"fuzzed {operation}: {count} cases")
    print(f"fuzzed {len(CASES)} operations, {CASES.total()} cases")


def _call(case: schemathesis.Case[Any], app: FastAPI) -> None:
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if case.path.startswith("/admin") and CASES[label] % 2 == 0:
        case.headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
    CASES[label] += 1
    case.call_and_validate(app=app)


@SCHEMA.parametrize()
@settings(max_examples=40, **HYPOTHESIS)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], closed_broker_app: FastAPI
) -> None:
    _call(case, closed_broker_app)


@pytest.mark.kafka
@SCHEMA.parametrize()
@settings(max_examples=10, **HYPOTHESIS)
def test_every_operation_answers_as_documented_with_a_broker(
    case: schemathesis.Case[Any], broker_app: FastAPI
) -> None:
    _call(case, broker_app)
