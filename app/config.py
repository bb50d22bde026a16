"""Application settings, read from the environment and an optional `.env` file.

Every field is documented in `.env.example` and the README. Nested models use `__` as the
delimiter, so `KAFKA__PRODUCER__ACKS=1` sets `settings.kafka.producer.acks`.

Validation happens once, at start-up (`load_settings`), and its errors name the environment
variable and say what to change, e.g.::

    KAFKA__PRODUCER__ENABLE_IDEMPOTENCE: idempotence needs acks=all ...
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import parseaddr
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.verification import hosts
from kafka_events import (
    DEFAULT_POLICIES,
    KafkaConfig,
    Policy,
    ProducerConfig,
    ReplayConfig,
    ReplyConfig,
    TopicName,
)
from kafka_events.config import check_policies

_ORIGIN = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$")
# A field named in a library message: `name` or `a.b.c`, relative to where the error is.
_FIELD_REFERENCE = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)`")

PositiveMs = Annotated[int, Field(gt=0)]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyName(StrEnum):
    """The service's delivery policies (`kafka_events.DEFAULT_POLICIES`, the seed's named
    clients); each has a producer of its own."""

    FIRE_AND_FORGET = "fire_and_forget"
    LEADER = "leader"
    REPLICATED = "replicated"


class PoliciesSettings(_Section):
    """The three named delivery policies, after the seed's named clients.

    fire_and_forget: acks=0, no answer, no offset; fastest, loses messages when a broker fails.
    leader: acks=1; lost if the leader dies before followers copy it.
    replicated: acks=all with idempotence; survives the loss of all but min.insync.replicas.
    """

    fire_and_forget: Policy = DEFAULT_POLICIES["fire_and_forget"]
    leader: Policy = DEFAULT_POLICIES["leader"]
    replicated: Policy = DEFAULT_POLICIES["replicated"]

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = [p.transactional_id for p in map(self.get, PolicyName) if p.transactional_id]
        if len(ids) != len(set(ids)):
            raise ValueError(
                "each policy needs its own TRANSACTIONAL_ID: producers sharing one fence each other"
            )
        return self

    def longest_deadline_ms(self) -> int:
        return max(self.get(name).delivery_timeout_ms for name in PolicyName)

    def get(self, name: PolicyName) -> Policy:
        policy: Policy = getattr(self, PolicyName(name).value)
        return policy

    def as_mapping(self) -> dict[str, Policy]:
        """The policies by name, as `KafkaEvents(policies=...)` takes them."""
        return {name.value: self.get(name) for name in PolicyName}


class KafkaSettings(KafkaConfig):
    """The library's `KafkaConfig` plus the service's three policies (`KAFKA__POLICIES__*`)."""

    producer: ProducerConfig = ProducerConfig(client_id="kafka-events-api")
    policies: PoliciesSettings = PoliciesSettings()

    @model_validator(mode="after")
    def _policies_fit(self) -> Self:
        check_policies(self.policies.as_mapping(), self.producer)
        return self


class VerificationSettings(_Section):
    topic: TopicName = "send.verification.email"
    policy: PolicyName = PolicyName.REPLICATED
    # Comma-separated hosts `redirect_url` may lead to (`*.example.com`: its subdomains); empty:
    # any public host (a WARNING at start-up). See app/verification/hosts.py.
    redirect_hosts: str = ""

    @field_validator("redirect_hosts")
    @classmethod
    def _redirect_hosts(cls, value: str) -> str:
        return ",".join(hosts.parse_allowed(value))

    @property
    def redirect_host_list(self) -> tuple[str, ...]:
        return tuple(self.redirect_hosts.split(",")) if self.redirect_hosts else ()


class ReplySettings(ReplyConfig):
    """Request-reply: where workers answer, and how long a request waits for the answer."""

    topic: TopicName = "send.verification.email.reply"


def url_without_password(url: str) -> str:
    """`url` with the password of its user info (if any) replaced by `***`.

    Everything up to the last `@` counts as user info, so a password with an unescaped `@`
    is hidden whole.
    """
    scheme, separator, rest = url.partition("://")
    user_info, at, location = rest.rpartition("@")
    if not at or ":" not in user_info:
        return url
    return f"{scheme}{separator}{user_info.partition(':')[0]}:***@{location}"


class StoreSettings(_Section):
    """Where failed and outbox messages are kept until delivered."""

    url: str = "sqlite+aiosqlite:///data/messages.db"

    def __repr_args__(self) -> Iterator[tuple[str, str]]:
        # the URL may hold the database password: repr() and str() show it masked
        yield "url", url_without_password(self.url)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "use sqlite+aiosqlite:///<path> (three slashes: relative, four: absolute) or "
                "postgresql+asyncpg://user:password@host/db"
            )
        return value


ReplaySettings = ReplayConfig
"""The background relay that publishes stored (failed or outbox) messages (`REPLAY__*`)."""


class AdminSettings(_Section):
    """The admin routes (/admin/...): off unless a token is set."""

    token: SecretStr | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("use at least 16 characters")
        return value


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    # uvicorn worker processes, each with its own app, producers, relay and rate limiter
    workers: int = Field(default=1, ge=1, le=64)
    # None: LOG__LEVEL
    log_level: LogLevel | None = None
    title: str = "Verification email service"
    max_body_bytes: int = Field(default=16384, gt=0)
    # Comma-separated browser origins allowed to call the API; empty = no CORS headers at all.
    cors_origins: str = ""

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [part.strip().rstrip("/").lower() for part in value.split(",") if part.strip()]
        for origin in origins:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"'{origin}' is not an origin: give scheme://host[:port] with http or https, "
                    "no path and no wildcard (e.g. https://app.example.com)"
                )
        return ",".join(origins)

    @property
    def cors_origin_list(self) -> list[str]:
        return self.cors_origins.split(",") if self.cors_origins else []


class IdempotencySettings(_Section):
    """`Idempotency-Key` on POST /verification-emails: how long, and how many, answers are kept."""

    # A key's answer is returned again for this long after its first request.
    window_s: int = Field(default=86400, gt=0, le=7 * 86400)
    # At most this many keys per process (the oldest answered key is dropped first).
    max_keys: int = Field(default=10000, ge=1, le=1_000_000)


class ServerSettings(_Section):
    """The HTTP server's own limits (`SERVER__*`), applied by `python -m app` to each process.

    A slow, stalled or hostile client is cut off: the request head must arrive within
    `header_timeout_s` (408), the body within `body_timeout_s` (408), the head may hold at most
    `max_header_bytes` and `max_header_count` fields (431), and each process holds at most
    `max_connections` connections (beyond that a connection still waiting for its head is
    dropped to make room, else the new one gets 503). At start-up the soft descriptor limit
    is raised to `nofile` (default: the hard limit), and the connection bound is kept under it.
    """

    # From a connection's opening (or its previous response) to the end of the request head.
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # From the end of the head to the end of the body.
    body_timeout_s: float = Field(default=15.0, gt=0, le=300)
    # An idle keep-alive connection is closed after this (uvicorn's `timeout_keep_alive`).
    keep_alive_timeout_s: int = Field(default=5, gt=0, le=300)
    # The request line and the header fields together, in bytes.
    max_header_bytes: int = Field(default=16384, ge=1024, le=1048576)
    max_header_count: int = Field(default=100, ge=8, le=10000)
    # Per process (each of API__WORKERS has its own).
    max_connections: int = Field(default=1000, ge=1, le=1000000)
    # None: raise the soft RLIMIT_NOFILE to the hard limit.
    nofile: int | None = Field(default=None, ge=64)


class RateLimitFailure(StrEnum):
    """What a request gets while Redis (the shared rate-limit store) does not answer in time.

    `open`: it is checked against this process's own in-memory limiter instead (the limit then
    holds per process, as without Redis), with a warning and a metric; `closed`: it is refused
    with `503 rate_limit_unavailable`, and `/health/ready` fails while Redis does.
    """

    OPEN = "open"
    CLOSED = "closed"


# The in-memory rate limiter's storage per address besides its request times, and its bound.
_MEMORY_BYTES_PER_ADDRESS = 40
MAX_MEMORY_BYTES = 2**30


class RateLimitSettings(_Section):
    """Per-address limit of POST /verification-emails: in each process's memory, or in Redis
    (shared by every process and replica) when `redis_url` is set."""

    enabled: bool = True
    per_email: int = Field(default=5, gt=0, le=10000)
    # Whole seconds: the limiter and the Retry-After header both count in seconds.
    window_s: int = Field(default=3600, gt=0, le=7 * 86400)
    # In memory: addresses tracked at most per process; past it the least recently seen
    # is forgotten (its count restarts). Memory: `memory_bytes()`, reserved at start-up.
    max_addresses: int = Field(default=100_000, gt=0, le=10_000_000)
    # None: in memory, per process. redis://[[user]:password@]host[:port][/db], or rediss://.
    redis_url: str | None = None
    # Bound of every Redis call (connecting, waiting for a pooled connection, each command).
    redis_timeout_ms: int = Field(default=500, gt=0, le=10_000)
    redis_max_connections: int = Field(default=32, gt=0, le=1024)
    on_redis_error: RateLimitFailure = RateLimitFailure.OPEN

    def __repr_args__(self) -> Iterator[tuple[str, object]]:
        # the URL may hold the Redis password: repr() and str() show it masked
        for name, value in super().__repr_args__():
            if name == "redis_url" and isinstance(value, str):
                value = url_without_password(value)
            yield name, value  # type: ignore[misc]

    def memory_bytes(self) -> int:
        """The bytes the in-memory store reserves when it is built. Per address: a 16-byte
        key, two buckets, its first bucket and two links (int32 each), two ring counters
        (uint16 each), 40 bytes in all, and its latest `per_email` request times (doubles)."""
        return (_MEMORY_BYTES_PER_ADDRESS + 8 * self.per_email) * self.max_addresses

    @model_validator(mode="after")
    def _memory_fits(self) -> Self:
        in_memory = self.redis_url is None or self.on_redis_error is RateLimitFailure.OPEN
        if self.enabled and in_memory and (reserved := self.memory_bytes()) > MAX_MEMORY_BYTES:
            raise ValueError(
                f"`per_email` x `max_addresses` ({self.per_email} x {self.max_addresses}): "
                f"the in-memory limiter would reserve {reserved / 2**20:,.0f} MiB at start-up "
                f"((40 + 8 x PER_EMAIL) bytes per address), over its bound of "
                f"{MAX_MEMORY_BYTES // 2**20:,} MiB. Lower either, or count in Redis only "
                "(`redis_url` and `on_redis_error`=closed)"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://")) or not value.partition("://")[2]:
            raise ValueError(
                "use redis://[[user]:password@]host[:port][/db] (rediss:// for TLS), "
                "or leave it empty to count in each process's memory"
            )
        return value


class MetricsSettings(_Section):
    """Prometheus metrics: `GET /metrics` on the API, and a metrics port on the worker."""

    # Serve GET /metrics and count HTTP requests; off: neither (the counters still run).
    enabled: bool = True
    # The worker has no HTTP server of its own: it serves /metrics here. Port 0: none.
    worker_host: str = Field(default="127.0.0.1", min_length=1)
    worker_port: int = Field(default=9102, ge=0, lt=65536)


class SmtpBackend(StrEnum):
    """How the worker delivers emails: a real SMTP server, or the log (local development)."""

    SMTP = "smtp"
    LOG = "log"


class SmtpTls(StrEnum):
    """`none`: plain SMTP; `starttls`: upgrade after connecting (required); `tls`: TLS at once."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class SmtpSettings(_Section):
    """The SMTP server the worker sends verification emails through."""

    backend: SmtpBackend = SmtpBackend.LOG
    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=25, gt=0, lt=65536)
    tls: SmtpTls = SmtpTls.NONE
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "no-reply@example.com"
    # each step of a send (connect, TLS, each command) but the wait for the final reply
    timeout_ms: PositiveMs = 10000
    # the wait for the reply to the final "." of DATA: the server has the message by then, so
    # giving up makes the outcome unknown (RFC 5321 4.5.3.2.6 suggests 10 minutes; see the docs)
    final_reply_timeout_ms: PositiveMs = 120000

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address:
            raise ValueError("give an address, e.g. no-reply@example.com or 'App <app@x.org>'")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("SMTP__USERNAME and SMTP__PASSWORD go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _final_reply(self) -> Self:
        if self.final_reply_timeout_ms < self.timeout_ms:
            raise ValueError(
                f"SMTP__FINAL_REPLY_TIMEOUT_MS ({self.final_reply_timeout_ms}) must not be "
                f"shorter than SMTP__TIMEOUT_MS ({self.timeout_ms}): after the final dot the "
                "server has the message, and giving up early leaves its outcome unknown"
            )
        return self


class WorkerSettings(_Section):
    """The verification-email worker (`python -m app.worker`), a consumer of VERIFICATION__TOPIC."""

    group_id: str = Field(default="verification-email-worker", min_length=1)
    client_id: str = Field(default="verification-email-worker", min_length=1)
    dead_letter_topic: TopicName = "send.verification.email.dlq"
    max_attempts: int = Field(default=5, gt=0, le=100)
    backoff_initial_ms: PositiveMs = 500
    backoff_max_ms: PositiveMs = 10000
    start_timeout_ms: PositiveMs = 30000
    produce_timeout_ms: PositiveMs = 10000
    commit_timeout_ms: PositiveMs = 10000
    shutdown_timeout_ms: PositiveMs = 30000
    max_poll_interval_ms: PositiveMs = 300000
    # a record whose handling raises an unexpected error this many times in a row is
    # dead-lettered (a poison record), so that it cannot hold its partition
    max_handler_errors: int = Field(default=3, ge=1, le=100)
    # None: LOG__LEVEL
    log_level: LogLevel | None = None

    @model_validator(mode="after")
    def _backoff(self) -> Self:
        if self.backoff_initial_ms > self.backoff_max_ms:
            raise ValueError(
                f"WORKER__BACKOFF_INITIAL_MS ({self.backoff_initial_ms}) must not exceed "
                f"WORKER__BACKOFF_MAX_MS ({self.backoff_max_ms})"
            )
        return self


class LogFormat(StrEnum):
    """`text`: one readable line per record; `json`: one JSON object per line."""

    TEXT = "text"
    JSON = "json"


class LogSettings(_Section):
    """Logging of both processes; API__LOG_LEVEL and WORKER__LOG_LEVEL override the level."""

    format: LogFormat = LogFormat.TEXT
    level: LogLevel = "info"


class TracingExporter(StrEnum):
    """Where spans go: an OTLP/HTTP collector, stdout, or nowhere (context still propagates)."""

    OTLP = "otlp"
    CONSOLE = "console"
    NONE = "none"


class TracingSettings(_Section):
    """OpenTelemetry tracing of the API and the worker (`app.telemetry`); off by default."""

    enabled: bool = False
    # The API reports this service name, the worker this name plus "-worker".
    service_name: str = Field(default="kafka-events", min_length=1)
    exporter: TracingExporter = TracingExporter.OTLP
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # Share of new traces recorded; a trace begun upstream follows its caller's decision.
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Bounds one export request, and the flush on shutdown.
    export_timeout_ms: PositiveMs = 5000

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(
                "give the collector's full OTLP/HTTP traces URL, e.g. "
                "http://127.0.0.1:4318/v1/traces"
            )
        return value


class Settings(BaseSettings):
    """Every setting of the service. See `.env.example` for the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        # `KEY=` (as in .env.example) means "use the default", not an empty string or path.
        env_ignore_empty=True,
        # Unrelated variables in .env (e.g. for docker compose) are not ours to refuse.
        extra="ignore",
        frozen=True,
    )

    api: ApiSettings = ApiSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    replay: ReplaySettings = ReplaySettings()
    admin: AdminSettings = AdminSettings()
    verification: VerificationSettings = VerificationSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    metrics: MetricsSettings = MetricsSettings()
    reply: ReplySettings = ReplySettings()
    smtp: SmtpSettings = SmtpSettings()
    worker: WorkerSettings = WorkerSettings()
    tracing: TracingSettings = TracingSettings()

    @model_validator(mode="after")
    def _transactional_ids_per_process(self) -> Self:
        if self.api.workers > 1:
            for name in PolicyName:
                if self.kafka.policies.get(name).transactional_id is not None:
                    raise ValueError(
                        f"API__WORKERS={self.api.workers} with "
                        f"KAFKA__POLICIES__{name.value.upper()}__TRANSACTIONAL_ID: every worker "
                        "process would use that id and fence the others. Use API__WORKERS=1 "
                        "and scale with replicas, each with its own id"
                    )
        return self


class SettingsError(Exception):
    """The environment holds settings the service cannot run with."""


def env_names(text: str, location: tuple[str | int, ...]) -> str:
    """`text` with the fields a library message names (`` `a.b` ``, relative to `location`)
    written as the environment variables that set them (`KAFKA__A__B`)."""
    prefix = [str(part) for part in location]
    return _FIELD_REFERENCE.sub(
        lambda found: "__".join([*prefix, *found.group(1).split(".")]).upper(), text
    )


def describe_validation_error(error: ValidationError) -> str:
    """Render a pydantic error as one line per problem, named by environment variable."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        location = "__".join(str(part) for part in item["loc"]).upper()
        message = env_names(item["msg"].removeprefix("Value error, "), tuple(item["loc"]))
        lines.append(f"{location or 'settings'}: {message}" if location else message)
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, raising `SettingsError` with a readable message if any is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
