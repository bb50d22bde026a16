"""Configuration objects, handed to the library's constructors.

Nothing here reads the environment: binding settings to environment variables, files or a
secrets manager is the application's job (the reference service composes these models into
its pydantic-settings `Settings`). Every model is a frozen pydantic model that refuses unknown
fields, so a typo is an error, not a silently ignored option.

Error messages name fields in backticks, as paths relative to the model that raised
(`` `acks` ``, `` `security.sasl_password` ``), so that an application can render them in
its own vocabulary (the reference service turns them into environment variable names).

    KafkaConfig        where the brokers are and how to reach them (shared by every client)
    ├── SecurityConfig TLS and SASL
    └── ProducerConfig transport options of every producer (aiokafka's own names)
    Policy             how messages of one named delivery policy are delivered
    └── Retry          kafkajs-style retries of a publish
    ReplayConfig       the relay that publishes stored messages
    ReplyConfig        request-reply: the reply topic and how long a request waits
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from aiokafka import codec  # type: ignore[import-untyped]
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_POLICY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

PositiveMs = Annotated[int, Field(gt=0)]


def _topic_name(value: str) -> str:
    if not _TOPIC.match(value) or value in {".", ".."}:
        raise ValueError("a Kafka topic name is 1-249 of A-Z a-z 0-9 . _ -")
    return value


TopicName = Annotated[str, AfterValidator(_topic_name)]
"""A valid Kafka topic name: 1-249 of `A-Z a-z 0-9 . _ -`, and neither `.` nor `..`."""


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


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecurityConfig(_Config):
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
        protocol = f"`protocol`={self.protocol.value}"
        if self.uses_sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"{protocol} needs `sasl_username` and `sasl_password`")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"`{name}`: no file at {path}")
        unused = [
            f"`{name}`"
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
            raise ValueError("a client certificate needs both `ssl_certfile` and `ssl_keyfile`")
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ValueError("`ssl_key_password` needs `ssl_keyfile`")
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
                f"`ssl_cafile`: {self.ssl_cafile} is not a PEM CA bundle ({error})"
            ) from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, self.key_password)
            except (ssl.SSLError, OSError) as error:
                raise ValueError(
                    "`ssl_certfile` / `ssl_keyfile`: cannot load the client certificate and key "
                    "(PEM, matching each other; an encrypted key needs `ssl_key_password`) "
                    f"({error})"
                ) from None


class ProducerConfig(_Config):
    """Transport options shared by every producer (named after aiokafka's own)."""

    client_id: str = Field(default="kafka-events", min_length=1)
    linger_ms: int = Field(default=0, ge=0)
    # aiokafka keeps one open batch per partition, and a send that finds it full waits for it
    # to be sent: the batch should hold every send a process has in flight (512 KiB: about
    # 1,000 events of 500 bytes).
    max_batch_size: int = Field(default=524288, gt=0)
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
                f"`max_batch_size` ({self.max_batch_size}) must not exceed "
                f"`max_request_size` ({self.max_request_size})"
            )
        if self.compression_type is not None:
            available = getattr(codec, f"has_{self.compression_type.value}")
            if not available():
                raise ValueError(
                    f"`compression_type`={self.compression_type.value} needs "
                    f"aiokafka's '{self.compression_type.value}' extra installed "
                    f"(pip install 'aiokafka[{self.compression_type.value}]'); gzip needs nothing"
                )
        return self


class Retry(_Config):
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


class Policy(_Config):
    """How messages of one named delivery policy are delivered.

    The default is the safe one: acks=all with an idempotent producer, a 5 s deadline and
    kafkajs' retry schedule. Policies that share the producer options (`acks`,
    `enable_idempotence`, `linger_ms`, `transactional_id`, `transaction_timeout_ms`) share
    one producer.
    """

    acks: Acks = Acks.ALL
    enable_idempotence: bool = True
    delivery_timeout_ms: PositiveMs = 5000
    attempt_timeout_ms: PositiveMs = 2000
    retry: Retry = Retry()
    outbox: bool = False
    ordered_per_key: bool = True
    linger_ms: int | None = Field(default=None, ge=0)
    transactional_id: str | None = None
    transaction_timeout_ms: PositiveMs = 60000

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_aliases(cls, value: object) -> object:
        # Kafka spells "all" as -1 too; text arrives as strings, Python callers may pass ints.
        if value in (-1, "-1"):
            return Acks.ALL
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.enable_idempotence and self.acks is not Acks.ALL:
            raise ValueError(
                f"`acks`={self.acks.value} conflicts with `enable_idempotence`=true: an "
                "idempotent producer needs every in-sync replica to acknowledge. Set "
                "`acks`=all, or set `enable_idempotence`=false to use acks=0 or 1"
            )
        if self.transactional_id is not None and not self.enable_idempotence:
            raise ValueError("`transactional_id` needs `enable_idempotence`=true")
        if self.linger_ms is not None and self.linger_ms >= self.delivery_timeout_ms:
            raise ValueError(
                f"`linger_ms` ({self.linger_ms}) must be shorter than "
                f"`delivery_timeout_ms` ({self.delivery_timeout_ms}), or no publish could "
                "ever finish in time"
            )
        return self

    def producer_key(self) -> tuple[object, ...]:
        """What this policy's producer is made of: equal keys share one producer."""
        return (
            self.acks,
            self.enable_idempotence,
            self.linger_ms,
            self.transactional_id,
            self.transaction_timeout_ms,
        )


DEFAULT_POLICIES: Mapping[str, Policy] = {
    # acks=0: no answer, no offset; fastest, loses messages when a broker fails
    "fire_and_forget": Policy(acks=Acks.NONE, enable_idempotence=False, retry=Retry(retries=2)),
    # acks=1: lost if the leader dies before followers copy it
    "leader": Policy(acks=Acks.LEADER, enable_idempotence=False),
    # acks=all with idempotence: survives the loss of all but min.insync.replicas
    "replicated": Policy(),
}
"""The seed's three named clients, the policies used when none are given."""


def check_policies(policies: Mapping[str, Policy], producer: ProducerConfig) -> None:
    """Rules across policies and the producer options.

    Raises:
        ValueError: a policy name is not a short identifier, a producer's default `linger_ms`
            outlasts a policy's deadline, or two policies share a `transactional_id`.
    """
    if not policies:
        raise ValueError("give at least one delivery policy")
    for name, policy in policies.items():
        if not _POLICY_NAME.match(name):
            raise ValueError(f"policy name '{name}': use 1-32 of a-z 0-9 _, starting with a letter")
        if policy.linger_ms is None and producer.linger_ms >= policy.delivery_timeout_ms:
            raise ValueError(
                f"`producer.linger_ms` ({producer.linger_ms}) must be shorter than "
                f"`policies.{name}.delivery_timeout_ms` ({policy.delivery_timeout_ms})"
            )
    ids = [p.transactional_id for p in policies.values() if p.transactional_id]
    if len(ids) != len(set(ids)):
        raise ValueError(
            "each policy needs its own `transactional_id`: producers sharing one fence each other"
        )


class KafkaConfig(_Config):
    """Where the brokers are and how every client of the library reaches them."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security: SecurityConfig = SecurityConfig()
    producer: ProducerConfig = ProducerConfig()
    # how long a readiness probe waits for a broker's answer
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


class ReplayConfig(_Config):
    """The background relay that publishes stored (failed or outbox) messages."""

    enabled: bool = True
    interval_ms: PositiveMs = 1000
    batch_size: int = Field(default=100, gt=0, le=10000)
    backoff_max_ms: PositiveMs = 30000
    max_attempts: int = Field(default=100, gt=0)


class ReplyConfig(_Config):
    """Request-reply: where consumers answer, and how long a request waits for the answer."""

    topic: TopicName
    timeout_ms: PositiveMs = 10000
    # Create the reply topic at start-up if it is missing (clusters often refuse auto-creation).
    create_topic: bool = True
    partitions: int = Field(default=3, gt=0, le=1000)
    # Replies are short-lived: capped at the number of brokers (a one-node dev cluster works).
    replication_factor: int = Field(default=3, ge=1, le=32)
    # Replies are only useful for seconds; the topic keeps them for this long.
    retention_ms: PositiveMs = 3_600_000
