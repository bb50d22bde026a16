"""Application settings, read from the environment and an optional `.env` file.

Every field is documented in `.env.example` and the README. Nested models use `__` as the
delimiter, so `KAFKA__PRODUCER__ACKS=1` sets `settings.kafka.producer.acks`.

Validation happens once, at start-up (`load_settings`), and its errors name the environment
variable and say what to change, e.g.::

    KAFKA__PRODUCER__ENABLE_IDEMPOTENCE: idempotence needs acks=all ...
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from aiokafka import codec  # type: ignore[import-untyped]
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_ORIGIN = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$")

PositiveMs = Annotated[int, Field(gt=0)]
LogLevel = Literal["debug", "info", "warning", "error"]


def _topic_name(value: str) -> str:
    if not _TOPIC.match(value) or value in {".", ".."}:
        raise ValueError("a Kafka topic name is 1-249 of A-Z a-z 0-9 . _ -")
    return value


TopicName = Annotated[str, AfterValidator(_topic_name)]


class Acks(StrEnum):
    """How many replicas must have the record before the broker answers."""

    NONE = "0"
    LEADER = "1"
    ALL = "all"


class CompressionType(StrEnum):
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class Partitioner(StrEnum):
    """How a record's partition is chosen.

    `murmur2`: the Java client's key hash (records keyed the same land on the same partition
    as records written by Java, Go and kafkajs' default partitioners).
    `crc32`: librdkafka's `consistent_random` (CRC32 of the key), to match producers built on
    librdkafka (confluent-kafka-python, node-rdkafka).
    Records without a key go to a random available partition with either.
    """

    MURMUR2 = "murmur2"
    CRC32 = "crc32"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecuritySettings(_Section):
    """How to reach the brokers: plaintext, TLS, SASL or both.

    With TLS and no `ssl_cafile`, brokers are verified against the system's CAs (managed
    clusters usually have publicly signed certificates); a private CA must be named. SASL or TLS
    settings given with a protocol that does not use them are refused rather than ignored: a
    client meant to authenticate, or to encrypt, must not silently connect without.
    """

    protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @model_validator(mode="after")
    def _check(self) -> Self:
        protocol = f"KAFKA__SECURITY__PROTOCOL={self.protocol.value}"
        if self.uses_sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"{protocol} needs KAFKA__SECURITY__SASL_USERNAME and "
                "KAFKA__SECURITY__SASL_PASSWORD"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"KAFKA__SECURITY__{name.upper()}: no file at {path}")
        unused = [
            f"KAFKA__SECURITY__{name.upper()}"
            for name, wanted in (
                ("sasl_username", self.uses_sasl),
                ("sasl_password", self.uses_sasl),
                ("ssl_cafile", self.uses_ssl),
                ("ssl_certfile", self.uses_ssl),
                ("ssl_keyfile", self.uses_ssl),
                ("ssl_key_password", self.uses_ssl),
            )
            if not wanted and getattr(self, name) is not None
        ]
        if unused:
            raise ValueError(
                f"{', '.join(unused)} set, but {protocol} does not use "
                f"{'it' if len(unused) == 1 else 'them'}: choose the protocol that does "
                "(SASL_SSL for both SASL and TLS), or remove the setting"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "a client certificate needs both KAFKA__SECURITY__SSL_CERTFILE and "
                "KAFKA__SECURITY__SSL_KEYFILE"
            )
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ValueError("KAFKA__SECURITY__SSL_KEY_PASSWORD needs KAFKA__SECURITY__SSL_KEYFILE")
        if self.uses_ssl:
            self._check_tls_files()
        return self

    @property
    def key_password(self) -> str:
        """The client key's password; "" when none is set, so an encrypted key fails to load
        instead of OpenSSL asking for its password on the terminal."""
        return self.ssl_key_password.get_secret_value() if self.ssl_key_password else ""

    def _check_tls_files(self) -> None:
        """Load the PEM files as the clients will, so a bad file stops the start-up here."""
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
        except (ssl.SSLError, OSError) as error:
            raise ValueError(
                f"KAFKA__SECURITY__SSL_CAFILE: {self.ssl_cafile} is not a PEM CA bundle ({error})"
            ) from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, self.key_password)
            except (ssl.SSLError, OSError) as error:
                raise ValueError(
                    "KAFKA__SECURITY__SSL_CERTFILE / SSL_KEYFILE: cannot load the client "
                    "certificate and key (PEM, matching each other; an encrypted key needs "
                    f"KAFKA__SECURITY__SSL_KEY_PASSWORD) ({error})"
                ) from None


class ProducerSettings(_Section):
    """Transport options shared by every policy's producer (named after aiokafka's own)."""

    client_id: str = Field(default="kafka-events-api", min_length=1)
    linger_ms: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=16384, gt=0)
    compression_type: CompressionType | None = None
    max_request_size: int = Field(default=1048576, gt=0)
    request_timeout_ms: PositiveMs = 40000
    retry_backoff_ms: PositiveMs = 100
    metadata_max_age_ms: PositiveMs = 300000
    partitioner: Partitioner = Partitioner.MURMUR2
    connect_timeout_ms: PositiveMs = 5000
    reconnect_backoff_max_ms: PositiveMs = 30000
    close_timeout_ms: PositiveMs = 10000

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.max_batch_size > self.max_request_size:
            raise ValueError(
                f"KAFKA__PRODUCER__MAX_BATCH_SIZE ({self.max_batch_size}) must not exceed "
                f"KAFKA__PRODUCER__MAX_REQUEST_SIZE ({self.max_request_size})"
            )
        if self.compression_type is not None:
            available = getattr(codec, f"has_{self.compression_type.value}")
            if not available():
                raise ValueError(
                    f"KAFKA__PRODUCER__COMPRESSION_TYPE={self.compression_type.value} needs "
                    f"aiokafka's '{self.compression_type.value}' extra installed "
                    f"(pip install 'aiokafka[{self.compression_type.value}]'); gzip needs nothing"
                )
        return self


class RetrySettings(_Section):
    """Application-level retries of a publish, with kafkajs' `RetryOptions` semantics.

    The first retry waits `initial_retry_time_ms` randomised by +-`factor` (0.2 = +-20%); each
    next wait is the previous one randomised by +-`factor` and multiplied by `multiplier`,
    capped at `max_retry_time_ms` (a cap per wait, not a total). At most `retries` retries,
    and never past the policy's `delivery_timeout_ms`.
    """

    retries: int = Field(default=5, ge=0, le=100)
    initial_retry_time_ms: PositiveMs = 300
    factor: float = Field(default=0.2, ge=0, lt=1)
    multiplier: float = Field(default=2.0, ge=1)
    max_retry_time_ms: PositiveMs = 30000


class PolicyName(StrEnum):
    """The delivery policies; each has a producer of its own."""

    FIRE_AND_FORGET = "fire_and_forget"
    LEADER = "leader"
    REPLICATED = "replicated"


class PolicySettings(_Section):
    """How messages of a delivery policy are delivered."""

    acks: Acks
    enable_idempotence: bool
    delivery_timeout_ms: PositiveMs = 5000
    attempt_timeout_ms: PositiveMs = 2000
    retry: RetrySettings = RetrySettings()
    outbox: bool = False
    ordered_per_key: bool = True
    linger_ms: int | None = Field(default=None, ge=0)
    transactional_id: str | None = None
    transaction_timeout_ms: PositiveMs = 60000

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_aliases(cls, value: object) -> object:
        # Kafka spells "all" as -1 too; env values arrive as strings, Python callers may pass ints.
        if value in (-1, "-1"):
            return Acks.ALL
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    def check(self, name: str) -> None:
        """Cross-field rules; raises ValueError naming the variables of policy `name`."""
        var = f"KAFKA__POLICIES__{name.upper()}__"
        if self.enable_idempotence and self.acks is not Acks.ALL:
            raise ValueError(
                f"{var}ACKS={self.acks.value} conflicts with {var}ENABLE_IDEMPOTENCE=true: an "
                f"idempotent producer needs every in-sync replica to acknowledge. Set "
                f"{var}ACKS=all, or set {var}ENABLE_IDEMPOTENCE=false to use acks=0 or 1"
            )
        if self.transactional_id is not None and not self.enable_idempotence:
            raise ValueError(f"{var}TRANSACTIONAL_ID needs {var}ENABLE_IDEMPOTENCE=true")
        if self.linger_ms is not None and self.linger_ms >= self.delivery_timeout_ms:
            raise ValueError(
                f"{var}LINGER_MS ({self.linger_ms}) must be shorter than "
                f"{var}DELIVERY_TIMEOUT_MS ({self.delivery_timeout_ms}), or no publish could "
                "ever finish in time"
            )


class PoliciesSettings(_Section):
    """The three named delivery policies, after the seed's named clients.

    fire_and_forget: acks=0, no answer, no offset; fastest, loses messages when a broker fails.
    leader: acks=1; lost if the leader dies before followers copy it.
    replicated: acks=all with idempotence; survives the loss of all but min.insync.replicas.
    """

    fire_and_forget: PolicySettings = PolicySettings(
        acks=Acks.NONE, enable_idempotence=False, retry=RetrySettings(retries=2)
    )
    leader: PolicySettings = PolicySettings(acks=Acks.LEADER, enable_idempotence=False)
    replicated: PolicySettings = PolicySettings(acks=Acks.ALL, enable_idempotence=True)

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in PolicyName:
            self.get(name).check(name.value)
        ids = [p.transactional_id for p in map(self.get, PolicyName) if p.transactional_id]
        if len(ids) != len(set(ids)):
            raise ValueError(
                "each policy needs its own TRANSACTIONAL_ID: producers sharing one fence each other"
            )
        return self

    def longest_deadline_ms(self) -> int:
        return max(self.get(name).delivery_timeout_ms for name in PolicyName)

    def get(self, name: PolicyName) -> PolicySettings:
        policy: PolicySettings = getattr(self, PolicyName(name).value)
        return policy


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security: SecuritySettings = SecuritySettings()
    producer: ProducerSettings = ProducerSettings()
    policies: PoliciesSettings = PoliciesSettings()
    ready_timeout_ms: PositiveMs = 2000

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers:
            raise ValueError("give at least one broker as host:port")
        for server in servers:
            match = _HOST_PORT.match(server)
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f"'{server}' is not host:port (e.g. 127.0.0.1:9092)")
        return ",".join(servers)

    @model_validator(mode="after")
    def _linger_fits(self) -> Self:
        for name in PolicyName:
            policy = self.policies.get(name)
            if policy.linger_ms is None and self.producer.linger_ms >= policy.delivery_timeout_ms:
                raise ValueError(
                    f"KAFKA__PRODUCER__LINGER_MS ({self.producer.linger_ms}) must be shorter "
                    f"than KAFKA__POLICIES__{name.value.upper()}__DELIVERY_TIMEOUT_MS "
                    f"({policy.delivery_timeout_ms})"
                )
        return self

    @property
    def bootstrap_list(self) -> list[str]:
        return self.bootstrap_servers.split(",")


class VerificationSettings(_Section):
    topic: TopicName = "send.verification.email"
    policy: PolicyName = PolicyName.REPLICATED


class ReplySettings(_Section):
    """Request-reply: where workers answer, and how long a request waits for the answer."""

    topic: TopicName = "send.verification.email.reply"
    timeout_ms: PositiveMs = 10000
    # Create the reply topic at start-up if it is missing (clusters often refuse auto-creation).
    create_topic: bool = True
    partitions: int = Field(default=3, gt=0, le=1000)
    # Replies are short-lived: capped at the number of brokers (a one-node dev cluster works).
    replication_factor: int = Field(default=3, ge=1, le=32)
    # Replies are only useful for seconds; the topic keeps them for this long.
    retention_ms: PositiveMs = 3_600_000


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


class ReplaySettings(_Section):
    """The background relay that publishes stored (failed or outbox) messages."""

    enabled: bool = True
    interval_ms: PositiveMs = 1000
    batch_size: int = Field(default=100, gt=0, le=10000)
    backoff_max_ms: PositiveMs = 30000
    max_attempts: int = Field(default=100, gt=0)


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


class RateLimitSettings(_Section):
    """Per-address limit of POST /verification-emails, kept in each worker process's memory."""

    enabled: bool = True
    per_email: int = Field(default=5, gt=0, le=10000)
    # Whole seconds: the limiter and the Retry-After header both count in seconds.
    window_s: int = Field(default=3600, gt=0, le=7 * 86400)


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
    timeout_ms: PositiveMs = 10000

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
    """OpenTelemetry tracing of the API and the worker (`app.tracing`); off by default."""

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
    log: LogSettings = LogSettings()
    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    replay: ReplaySettings = ReplaySettings()
    admin: AdminSettings = AdminSettings()
    verification: VerificationSettings = VerificationSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
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


def describe_validation_error(error: ValidationError) -> str:
    """Render a pydantic error as one line per problem, named by environment variable."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        location = "__".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location or 'settings'}: {message}" if location else message)
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, raising `SettingsError` with a readable message if any is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
