"""No log line shows a secret: configured ones in any encoding, and those a client puts in a
query string, a header or a URL's user info (`app.redaction`, applied by both formatters).

Records go through the handler set up as `app.logs.logging_config` sets it up (its filters and
formatter, with the settings' secrets), in the text and the JSON format.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import logging.config
import pickle
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from app import logs, redaction
from app.config import LogFormat, LogSettings, Settings

ADMIN_TOKEN = "admin-token-7f3c9a1e5b"
SMTP_PASSWORD = "smtp-pw/+é 9d2"  # characters that percent-encoding and base64 change
SASL_PASSWORD = "sasl-pw-4e8b1c"
STORE_PASSWORD = "store p@ss/4"
CLIENT_SECRET = "hunter2-client-0b7d"  # never configured: a client's own, in the wrong place


def _settings(format_: LogFormat) -> Settings:
    return Settings(
        _env_file=None,
        log=LogSettings(format=format_),
        admin={"token": ADMIN_TOKEN},  # type: ignore[arg-type]
        smtp={"username": "mailer", "password": SMTP_PASSWORD},  # type: ignore[arg-type]
        kafka={  # type: ignore[arg-type]
            "security": {
                "protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "api",
                "sasl_password": SASL_PASSWORD,
            }
        },
        store={"url": f"postgresql+asyncpg://app:{quote(STORE_PASSWORD, safe='')}@db/app"},  # type: ignore[arg-type]
    )


def _encodings(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
    }


SECRETS = {
    form
    for secret in (ADMIN_TOKEN, SMTP_PASSWORD, SASL_PASSWORD, STORE_PASSWORD, CLIENT_SECRET)
    for form in _encodings(secret)
} | {base64.b64encode(f"\0mailer\0{SMTP_PASSWORD}".encode()).decode()}


@pytest.fixture(params=[LogFormat.TEXT, LogFormat.JSON])
def handler(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """The service's handler as `logging_config` builds it, writing to a string."""
    config = logs.logging_config(_settings(request.param), "api")
    config["handlers"]["default"]["stream"] = stream = io.StringIO()
    # a copy of the configuration on loggers of this test's own, so the root stays untouched
    name = f"test.redaction.{uuid.uuid4().hex}"
    config["root"] = {"level": "WARNING"}
    config["loggers"] = {name: {"level": "DEBUG", "handlers": ["default"], "propagate": False}}
    config["disable_existing_loggers"] = False
    logging.config.dictConfig(config)
    configured = logging.getLogger(name)
    try:
        yield configured.handlers[0], stream
    finally:
        for each in configured.handlers:
            configured.removeHandler(each)


def _emit(handler: logging.Handler, record: logging.LogRecord) -> None:
    if handler.filter(record):
        handler.emit(record)


def _record(name: str, message: str, *args: object, exc: Any = None) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args or None, exc)


def _leaks(text: str) -> list[str]:
    return sorted(secret for secret in SECRETS if secret in text)


@pytest.mark.parametrize(
    "target",
    [
        f"/admin/messages?token={ADMIN_TOKEN}",
        f"/health/live?status=ok&password={CLIENT_SECRET}&limit=5",
        f"/health/live?api_key={CLIENT_SECRET}",
        f"/health/live?apikey={CLIENT_SECRET}",
        f"/health/live?key={CLIENT_SECRET}",
        f"/health/live?access_token={CLIENT_SECRET}",
        f"/health/live?Authorization=Bearer%20{CLIENT_SECRET}",
        f"/health/live?to%6Ben={CLIENT_SECRET}",  # `token`, percent-encoded
        f"/health/live?a=1;secret={CLIENT_SECRET}",
        f"/health/live?passwd={quote(SMTP_PASSWORD, safe='')}",
        # absolute-form request targets, as uvicorn writes them (percent-encoded)
        quote(f"http://admin:{CLIENT_SECRET}@127.0.0.1:8000/health/live"),
        quote(f"http://{CLIENT_SECRET}@127.0.0.1:8000/health/live"),
        f"/events/{ADMIN_TOKEN}",  # a configured secret anywhere
    ],
)
def test_the_access_line_shows_no_secret(
    handler: tuple[logging.Handler, io.StringIO], target: str
) -> None:
    handle, stream = handler
    access = ("127.0.0.1:5000", "GET", target, "1.1", 200)
    _emit(handle, _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', *access))

    line = stream.getvalue()
    assert _leaks(line) == []
    assert "***" in line
    assert '"GET' in line or '"method": "GET"' in line
    if line.startswith("{"):
        assert redaction.MASK in json.loads(line)["path"]


def test_names_that_are_no_secret_are_kept(handler: tuple[logging.Handler, io.StringIO]) -> None:
    handle, stream = handler
    target = "/admin/messages?status=abandoned&limit=5&after_seq=10"
    _emit(
        handle, _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "c", "GET", target, "1.1", 200)
    )
    _emit(handle, _record("app.worker", "event e-1: key=ada@example.com partition=0 status: sent"))

    assert target in stream.getvalue()
    assert "key=ada@example.com partition=0 status: sent" in stream.getvalue()


@pytest.mark.parametrize(
    "message",
    [
        f"connecting with token {ADMIN_TOKEN}",
        f"smtp login with {base64.b64encode(SMTP_PASSWORD.encode()).decode()}",
        f"AUTH PLAIN {base64.b64encode(f'{chr(0)}mailer{chr(0)}{SMTP_PASSWORD}'.encode())!r}",
        f"sasl: {SASL_PASSWORD}",
        f"cannot connect to postgresql+asyncpg://app:{quote(STORE_PASSWORD, safe='')}@db/app",
        f"cannot connect: password {STORE_PASSWORD!r} refused",
        f"fetching https://user:{CLIENT_SECRET}@example.com/x",
        f"GET https://example.com/cb?code=1&access_token={CLIENT_SECRET}",
        f"headers: Authorization: Bearer {CLIENT_SECRET}",
        f"Cookie: session={CLIENT_SECRET}",
        f"X-Api-Key: {CLIENT_SECRET}",
        f"scope headers [(b'authorization', b'Basic {CLIENT_SECRET}'), (b'host', b'x')]",
        f"body {{'email': 'ada@example.com', 'password': '{CLIENT_SECRET}'}}",
        f'json {{"client_secret": "{CLIENT_SECRET}"}}',
    ],
)
def test_a_message_shows_no_secret(
    handler: tuple[logging.Handler, io.StringIO], message: str
) -> None:
    handle, stream = handler
    _emit(handle, _record("any.logger", "%s", message))

    assert _leaks(stream.getvalue()) == []
    assert "***" in stream.getvalue()


def test_a_traceback_and_extra_fields_show_no_secret(
    handler: tuple[logging.Handler, io.StringIO],
) -> None:
    handle, stream = handler
    try:
        raise ConnectionError(
            f"could not log in to https://app:{CLIENT_SECRET}@db/ ({ADMIN_TOKEN})"
        )
    except ConnectionError:
        record = _record("app", "failed", exc=sys.exc_info())
    record.detail = {"token": SASL_PASSWORD, "nested": [f"?password={CLIENT_SECRET}"]}
    _emit(handle, record)

    assert _leaks(stream.getvalue()) == []
    assert "ConnectionError" in stream.getvalue()


def test_the_configuration_carries_every_configured_secret_masked_and_pickles() -> None:
    config = logs.logging_config(_settings(LogFormat.JSON), "worker")
    secrets = config["formatters"]["default"]["secrets"]

    assert ADMIN_TOKEN not in repr(config)
    assert {s.get_secret_value() for s in secrets} >= {
        ADMIN_TOKEN,
        SMTP_PASSWORD,
        SASL_PASSWORD,
        STORE_PASSWORD,
        quote(STORE_PASSWORD, safe=""),
    }
    # uvicorn pickles it for each worker process (our own bytes, not untrusted data)
    copied = pickle.loads(pickle.dumps(config))  # noqa: S301
    assert copied["formatters"]["default"]["secrets"] == secrets


def test_short_configured_values_are_not_masked_everywhere() -> None:
    redactor = redaction.Redactor(["abc", ""])

    assert redactor.text("abc abcdef") == "abc abcdef"
