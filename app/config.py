"""Application settings, read from the environment and an optional `.env` file.

Every field is documented in `.env.example` and the README. Nested models use `__` as the
delimiter, so `KAFKA__PRODUCER__ACKS=1` sets `settings.kafka.producer.acks`.

Validation happens once, at start-up (`load_settings`), and its errors name the environment
variable and say what to change, e.g.::

    KAFKA__PRODUCER__ENABLE_IDEMPOTENCE: idempotence needs acks=all ...
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from aiokafka import codec  # type: ignore[import-untyped]
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

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

PositiveMs = Annotated[int, Field(gt=0)]


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
    """How to reach the brokers: plaintext, TLS, SASL or both."""

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
        if self.uses_sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"protocol {self.protocol} needs KAFKA__SECURITY__SASL_USERNAME and "
                "KAFKA__SECURITY__SASL_PASSWORD"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "a client certificate needs both KAFKA__SECURITY__SSL_CERTFILE and "
                "KAFKA__SECURITY__SSL_KEYFILE"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"KAFKA__SECURITY__{name.upper()}: no file at {path}")
        return self


class ProducerSettings(_Section):
    """Options of the long-lived producer, named after aiokafka's (and Kafka's) own."""

    client_id: str = Field(default="kafka-events-api", min_length=1)
    acks: Acks = Acks.ALL
    enable_idempotence: bool = True
    linger_ms: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=16384, gt=0)
    compression_type: CompressionType | None = None
    max_request_size: int = Field(default=1048576, gt=0)
    request_timeout_ms: PositiveMs = 40000
    retry_backoff_ms: PositiveMs = 100
    metadata_max_age_ms: PositiveMs = 300000
    partitioner: Partitioner = Partitioner.MURMUR2
    transactional_id: str | None = None
    transaction_timeout_ms: PositiveMs = 60000
    delivery_timeout_ms: PositiveMs = 5000
    connect_timeout_ms: PositiveMs = 5000
    reconnect_backoff_max_ms: PositiveMs = 30000
    close_timeout_ms: PositiveMs = 10000

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_aliases(cls, value: object) -> object:
        # Kafka spells "all" as -1 too; env values arrive as strings, Python callers may pass ints.
        if value in (-1, "-1"):
            return Acks.ALL
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.enable_idempotence and self.acks is not Acks.ALL:
            raise ValueError(
                f"KAFKA__PRODUCER__ACKS={self.acks.value} conflicts with "
                "KAFKA__PRODUCER__ENABLE_IDEMPOTENCE=true: an idempotent producer needs every "
                "in-sync replica to acknowledge. Set KAFKA__PRODUCER__ACKS=all, or set "
                "KAFKA__PRODUCER__ENABLE_IDEMPOTENCE=false to use acks=0 or 1"
            )
        if self.transactional_id is not None and not self.enable_idempotence:
            raise ValueError(
                "KAFKA__PRODUCER__TRANSACTIONAL_ID needs KAFKA__PRODUCER__ENABLE_IDEMPOTENCE=true"
            )
        if self.linger_ms >= self.delivery_timeout_ms:
            raise ValueError(
                f"KAFKA__PRODUCER__LINGER_MS ({self.linger_ms}) must be shorter than "
                f"KAFKA__PRODUCER__DELIVERY_TIMEOUT_MS ({self.delivery_timeout_ms}), or no "
                "publish could ever finish in time"
            )
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


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security: SecuritySettings = SecuritySettings()
    producer: ProducerSettings = ProducerSettings()
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

    @property
    def bootstrap_list(self) -> list[str]:
        return self.bootstrap_servers.split(",")


class VerificationSettings(_Section):
    topic: str = "send.verification.email"

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not _TOPIC.match(value) or value in {".", ".."}:
            raise ValueError("a Kafka topic name is 1-249 of A-Z a-z 0-9 . _ -")
        return value


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    title: str = "Verification email service"
    max_body_bytes: int = Field(default=16384, gt=0)


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
    kafka: KafkaSettings = KafkaSettings()
    verification: VerificationSettings = VerificationSettings()


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
