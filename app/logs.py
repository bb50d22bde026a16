"""Logging of both entry points, and the ids that tie a log line to a request and an event.

`start(process)` is the first step of `python -m app` and `python -m app.worker`: it loads
the settings (invalid ones: their description on stderr, as plain text since logging is not
configured yet, and exit status 2) and configures logging with `logging_config()`. The API
hands the same configuration to uvicorn (`log_config`), which applies it in every worker
process, so uvicorn's own lines (start-up, access log, errors) use the same format.

Formats (`LOG__FORMAT`), one record per line on stderr:

- `text`: `2026-01-02 03:04:05,678 INFO app.worker.consumer [correlation_id=... event_id=...]:
  message`, the bracket only when an id is known;
- `json` ([python-json-logger](https://nhairs.github.io/python-json-logger/)): `timestamp`
  (ISO 8601, UTC), `level`, `logger`, `pid`, `message`, then `correlation_id` and `event_id`
  when known, `exc_info` (the traceback) with an exception, and on uvicorn's access lines
  `client`, `method`, `path`, `http_version` and `status`.

The level (`LOG__LEVEL`; `API__LOG_LEVEL` and `WORKER__LOG_LEVEL` override it for one process)
is the root logger's: it applies to the app's loggers and to uvicorn's and aiokafka's.
SQLAlchemy keeps its own `WARNING` (it would log every statement with its parameters).

Context, carried by every line logged while it is bound (`bound()`, contextvars, so it follows
a request's task and the tasks it starts):

- `correlation_id`: an HTTP request's comes from its `X-Correlation-ID` header when that is
  valid (1-64 of `A-Z a-z 0-9 . _ : -`), else it is a new UUID; the response carries it back in
  the same header (middleware: [asgi-correlation-id](https://github.com/snok/asgi-correlation-id)).
  Events published for the request carry it in their `correlation_id` Kafka header, and the
  worker binds it from there while it handles the record.
- `event_id`: bound while a request dispatches its event, and while the worker handles it.

No secret reaches a log line, even one a client put in the wrong place. Secrets are `SecretStr`
settings (masked in any repr), the store URL's repr hides its password, and settings errors name
variables, never values. And both formatters pass every rendered line through
`app.redaction.Redactor`, which masks each configured secret (in its encodings too), the values
of query parameters and headers whose names look secret (`?token=`, `Authorization:`...) and URL
passwords; uvicorn's access line gets its request target redacted before it is rendered. An
uncaught exception is logged too (`sys.excepthook`), so its traceback is redacted like the rest.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from asgi_correlation_id import CorrelationIdMiddleware
from asgi_correlation_id import correlation_id as request_correlation_id
from pydantic import SecretStr
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from app import redaction
from app.config import LogFormat, Settings, SettingsError, load_settings
from kafka_events import context
from kafka_events.context import bound, correlation_id_in, valid_correlation_id

if TYPE_CHECKING:  # the worker imports this module too, and needs no FastAPI
    from fastapi import FastAPI

__all__ = ["bound", "correlation_id_in", "valid_correlation_id"]

Process = Literal["api", "worker"]

CORRELATION_HEADER = "X-Correlation-ID"
# The Kafka header that carries it from the API to the worker and the relay.
KAFKA_CORRELATION_HEADER = context.CORRELATION_HEADER

# Bound while an event is published, replayed or handled (`bound()`); a request's own
# correlation id is the middleware's `request_correlation_id`, shown when none is bound.
correlation_id = context.correlation_id
event_id = context.event_id
_CONTEXT = ("correlation_id", "event_id")


def new_correlation_id() -> str:
    return str(uuid.uuid4())


class ContextFilter(context.ContextFilter):
    """Adds the bound ids (as `correlation_id`, `event_id`) to each record when they are set;
    the request's correlation id when no other is bound."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if not hasattr(record, "correlation_id") and (found := request_correlation_id.get()):
            record.correlation_id = found
        return True


class AccessRedaction(logging.Filter):
    """Redacts the request target of uvicorn's access lines (`redaction.request_target`) in the
    record's arguments, which the JSON format also writes as the `path` field."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            target = args[2]
            if isinstance(target, str):
                record.args = (*args[:2], redaction.request_target(target), *args[3:])
        return True


def _redactor(secrets: Iterable[SecretStr]) -> redaction.Redactor:
    return redaction.Redactor(secret.get_secret_value() for secret in secrets)


class TextFormatter(logging.Formatter):
    """`asctime level logger [ids]: message`; the bracket only when an id is known. The whole
    line, traceback included, is redacted (`secrets`: the configured ones)."""

    def __init__(self, secrets: Iterable[SecretStr] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")
        self.redactor = _redactor(secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={value}" for name in _CONTEXT if (value := getattr(record, name, None))
        )
        record.ids = f" [{ids}]" if ids else ""
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(super().format(record))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record; the timestamp in ISO 8601, UTC, first. Every string in it is
    redacted (`secrets`: the configured ones)."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, secrets: Iterable[SecretStr] = ()) -> None:
        self.redactor = _redactor(secrets)
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={
                "asctime": "timestamp",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
            # uvicorn adds a coloured copy of some messages; `ids` is the text format's
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "ids", "taskName"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        # uvicorn's access log line, `client - "METHOD path HTTP/version" status`, as fields too
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            log_data.update(zip(_ACCESS_FIELDS, args, strict=True))

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        redacted = self._redacted(log_data)
        assert isinstance(redacted, dict)
        return redacted

    def _redacted(self, value: object) -> object:
        if isinstance(value, str):
            return self.redactor.text(value)
        if isinstance(value, dict):
            return {key: self._redacted(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._redacted(item) for item in value]
        return value


# The arguments of uvicorn's access log record, in order.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def level_of(settings: Settings, process: Process) -> str:
    """The log level of `process`: its own override, else `LOG__LEVEL`."""
    own = settings.api.log_level if process == "api" else settings.worker.log_level
    return own or settings.log.level


def configured_secrets(settings: Settings) -> Iterator[SecretStr]:
    """Every secret value of `settings`, as the log lines could carry it."""
    security = settings.kafka.security
    smtp = settings.smtp
    for secret in (
        settings.admin.token,
        smtp.password,
        security.sasl_password,
        security.ssl_key_password,
    ):
        if secret is not None:
            yield secret
    if smtp.username is not None and smtp.password is not None:
        # AUTH PLAIN's credentials, which the exchange carries base64-encoded
        yield SecretStr(f"\0{smtp.username}\0{smtp.password.get_secret_value()}")
    yield from passwords_in_url(settings.store.url)


def passwords_in_url(url: str) -> Iterator[SecretStr]:
    """The password of `url`'s user info, as written and percent-decoded (as in
    `app.config.url_without_password`, everything up to the last `@` is user info)."""
    user_info, at, _ = url.partition("://")[2].rpartition("@")
    _, colon, password = user_info.partition(":")
    if at and colon and password:
        yield SecretStr(password)
        yield SecretStr(unquote(password))


def logging_config(settings: Settings, process: Process) -> dict[str, Any]:
    """The `logging.config.dictConfig` configuration of `process` (picklable: uvicorn hands
    it to each worker process it spawns). The configured secrets are in it, as `SecretStr`,
    for the formatters to redact."""
    formatter = JsonLineFormatter if settings.log.format is LogFormat.JSON else TextFormatter
    secrets = tuple(configured_secrets(settings))
    return {
        "version": 1,
        # loggers created at import time (every module's `logger`) must keep working
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": ContextFilter},
            "access_redaction": {"()": AccessRedaction},
        },
        "formatters": {"default": {"()": formatter, "secrets": secrets}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                # on the handler, not a logger: it then sees the records of every logger
                "filters": ["context", "access_redaction"],
            }
        },
        "root": {"level": level_of(settings, process).upper(), "handlers": ["default"]},
    }


def start(process: Process) -> Settings:
    """Load the settings and configure logging for `process`: an entry point's first step.

    Raises:
        SystemExit: status 2 when the settings are invalid, after printing what is wrong
            (each problem named by its variable, no value) to stderr.
    """
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    logging.config.dictConfig(logging_config(settings, process))
    logging.captureWarnings(True)  # Python's warnings as log lines, in the same format
    sys.excepthook = _log_uncaught  # a traceback as a log line, redacted like the others
    return settings


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("app").critical("uncaught exception", exc_info=(kind, error, trace))


def install(app: FastAPI) -> None:
    """Give each request of `app` its correlation id (add it last: it must be outermost)."""
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=CORRELATION_HEADER,
        generator=new_correlation_id,
        validator=valid_correlation_id,
    )
