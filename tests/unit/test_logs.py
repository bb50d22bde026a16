"""Log formats, the request and event ids they carry, and the correlation id of HTTP requests."""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app import logs
from app.config import ApiSettings, LogFormat, LogSettings, Settings, WorkerSettings
from kafka_events.store import MessageStore
from tests.helpers.service import RunningApp, make_settings, running_app
from tests.helpers.waiting import closed_port

VALID = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


@pytest.fixture
def output() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing through the context filter to a string; no propagation."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def _use(logger: logging.Logger, formatter: logging.Formatter) -> None:
    for handler in logger.handlers:
        handler.setFormatter(formatter)


def test_json_lines_carry_the_bound_ids(output: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = output
    _use(logger, logs.JsonLineFormatter())

    logger.info("before")
    with logs.bound(correlation_id="req-1", event_id="e-1"):
        logger.warning("event %s: sent", "e-1")
    logger.info("after")

    before, during, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert during["message"] == "event e-1: sent"
    assert (during["correlation_id"], during["event_id"]) == ("req-1", "e-1")
    assert (during["level"], during["logger"]) == ("WARNING", logger.name)
    assert isinstance(during["pid"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", during["timestamp"])
    assert next(iter(during)) == "timestamp"
    assert "correlation_id" not in before
    assert "event_id" not in after


def test_a_json_line_holds_the_traceback_as_one_field(
    output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = output
    _use(logger, logs.JsonLineFormatter())

    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("it failed")

    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "it failed"
    assert "ValueError: broken" in record["exc_info"]


def test_uvicorns_coloured_copy_of_a_message_is_left_out(
    output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = output
    _use(logger, logs.JsonLineFormatter())

    logger.info("Started server process [1]", extra={"color_message": "\x1b[36m1\x1b[0m"})

    assert "color_message" not in json.loads(stream.getvalue())


def test_an_access_line_has_its_request_as_fields_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonLineFormatter())
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/verification-emails", "1.1", 202),
        None,
    )

    handler.emit(record)

    line = json.loads(stream.getvalue())
    assert line["message"] == '127.0.0.1:5000 - "POST /verification-emails HTTP/1.1" 202'
    assert (line["method"], line["path"], line["status"]) == ("POST", "/verification-emails", 202)
    assert (line["client"], line["http_version"]) == ("127.0.0.1:5000", "1.1")


def test_text_lines_show_the_ids_only_when_known(
    output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = output
    _use(logger, logs.TextFormatter())

    logger.info("plain")
    with logs.bound(event_id="e-2"):
        logger.info("with an event")

    plain, with_event = stream.getvalue().splitlines()
    assert plain.endswith(f"INFO {logger.name}: plain")
    assert with_event.endswith(f"INFO {logger.name} [event_id=e-2]: with an event")


def test_bound_ids_get_their_previous_values_back() -> None:
    with logs.bound(correlation_id="outer"):
        with logs.bound(correlation_id="inner", event_id="e-3"):
            assert (logs.correlation_id.get(), logs.event_id.get()) == ("inner", "e-3")
        assert (logs.correlation_id.get(), logs.event_id.get()) == ("outer", None)
    assert logs.correlation_id.get() is None


def test_only_the_two_ids_can_be_bound() -> None:
    with pytest.raises(TypeError, match="user_id"), logs.bound(user_id="u-1"):
        pass


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("6a5cec54-9a81-497f-9083-8a80e729fb17", True),
        ("req.42_a:b", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("two words", False),
        ("line\nbreak", False),
        ('{"json": 1}', False),
        ("ümlaut", False),
    ],
)
def test_which_correlation_ids_are_accepted(value: str, valid: bool) -> None:
    assert logs.valid_correlation_id(value) is valid


def test_a_process_level_overrides_the_common_one() -> None:
    settings = Settings(
        _env_file=None,
        log=LogSettings(level="warning"),
        worker=WorkerSettings(log_level="debug"),
    )

    assert logs.level_of(settings, "api") == "warning"
    assert logs.level_of(settings, "worker") == "debug"
    assert logs.logging_config(settings, "worker")["root"]["level"] == "DEBUG"


def test_the_configuration_can_be_handed_to_worker_processes() -> None:
    settings = Settings(_env_file=None, log=LogSettings(format=LogFormat.JSON))
    config = logs.logging_config(settings, "api")

    # uvicorn pickles it for each worker process (our own bytes, not untrusted data)
    assert pickle.loads(pickle.dumps(config)) == config  # noqa: S301
    assert config["formatters"]["default"]["()"] is logs.JsonLineFormatter
    assert config["disable_existing_loggers"] is False


# --- HTTP requests ---------------------------------------------------------------------------


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningApp]:
    """The app without a broker: each publish fails fast and is recorded in the store."""
    settings = make_settings(
        f"127.0.0.1:{closed_port()}",
        "t-logs",
        store_url=f"sqlite+aiosqlite:///{tmp_path}/store.db",
        delivery_timeout_ms=300,
        connect_timeout_ms=200,
    )
    settings = settings.model_copy(update={"api": ApiSettings(max_body_bytes=1024)})
    async with running_app(settings) as app:
        yield app


async def _stored_headers(store: MessageStore) -> dict[str, bytes]:
    (record,) = await store.list()
    return dict(record.headers)


async def test_a_request_without_an_id_gets_a_new_one_its_event_carries(
    running: RunningApp,
) -> None:
    response = await running.client.post("/verification-emails", json=VALID)

    assert response.status_code == 503  # no broker: recorded, as published later
    correlation_id = response.headers[logs.CORRELATION_HEADER]
    assert uuid.UUID(correlation_id)
    headers = await _stored_headers(running.state.store)
    assert headers["correlation_id"] == correlation_id.encode()
    assert headers["event_id"] == response.json()["event_id"].encode()


async def test_a_valid_request_id_is_kept_and_an_invalid_one_replaced(
    running: RunningApp,
) -> None:
    given = await running.client.get("/health/live", headers={"X-Correlation-ID": "req-42"})
    invalid = await running.client.get(
        "/health/live", headers={"X-Correlation-ID": "not valid; " + "x" * 100}
    )

    assert given.headers[logs.CORRELATION_HEADER] == "req-42"
    assert uuid.UUID(invalid.headers[logs.CORRELATION_HEADER])


async def test_refusals_before_the_app_carry_the_id_too(running: RunningApp) -> None:
    response = await running.client.post(
        "/verification-emails",
        content=b"x" * 2000,
        headers={"content-type": "application/json", "X-Correlation-ID": "req-big"},
    )

    assert response.status_code == 413
    assert response.headers[logs.CORRELATION_HEADER] == "req-big"


async def test_lines_logged_for_a_request_carry_its_ids(
    running: RunningApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(logs.ContextFilter())

    response = await running.client.post(
        "/verification-emails", json=VALID, headers={"X-Correlation-ID": "req-7"}
    )

    event_id = response.json()["event_id"]
    recorded = [r for r in caplog.records if "recorded as" in r.getMessage()]
    assert recorded, caplog.text
    assert all(getattr(r, "correlation_id", None) == "req-7" for r in recorded)
    assert all(getattr(r, "event_id", None) == event_id for r in recorded)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("event_id", b"e-1"), ("correlation_id", b"req-1")], "req-1"),
        ([("correlation_id", b"old"), ("correlation_id", b"new")], "new"),  # the last wins
        ([("event_id", b"e-1")], None),
        ([("correlation_id", b"has space")], None),  # never an invalid id in a log line
        ([("correlation_id", b"\xff\xfe")], None),
        ([("correlation_id", b"x" * 65)], None),
    ],
)
def test_the_correlation_id_of_kafka_headers(
    headers: list[tuple[str, bytes]], expected: str | None
) -> None:
    assert logs.correlation_id_in(headers) == expected
