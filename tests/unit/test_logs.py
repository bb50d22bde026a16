"""Log formats, and the request and event ids they carry."""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import uuid
from collections.abc import Iterator

import pytest

from app import logs
from app.config import LogFormat, LogSettings, Settings, WorkerSettings


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
