"""Translate the configuration into aiokafka's constructor arguments (the only place that
knows them)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any

from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]

from kafka_events.config import Acks, KafkaConfig, Partitioner, Policy


def crc32_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """librdkafka's `consistent_random`: CRC32 of the key, random for records without one."""
    if key is None:
        return random.choice(available or all_partitions)  # noqa: S311 - spreading load, not security
    ordered = sorted(all_partitions)
    return ordered[zlib.crc32(key) % len(ordered)]


_PARTITIONERS: dict[Partitioner, Any] = {
    Partitioner.MURMUR2: DefaultPartitioner(),
    Partitioner.CRC32: crc32_partitioner,
}


def client_options(settings: KafkaConfig) -> dict[str, Any]:
    """Connection and security arguments shared by producers, consumers and admin clients."""
    security = settings.security
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_list,
        "security_protocol": security.protocol.value,
    }
    if security.uses_ssl:
        context = create_ssl_context(
            cafile=security.ssl_cafile,
            certfile=security.ssl_certfile,
            keyfile=security.ssl_keyfile,
            password=security.key_password,
        )
        context.check_hostname = security.ssl_check_hostname
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism.value
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = (
            security.sasl_password.get_secret_value() if security.sasl_password else None
        )
    return options


def producer_client_id(settings: KafkaConfig, name: str) -> str:
    """The client id of the producer `name`: one per producer, so that broker logs and quotas
    tell them apart."""
    return f"{settings.producer.client_id}-{name}"


def producer_options(settings: KafkaConfig, policy: Policy, *, client_id: str) -> dict[str, Any]:
    """Every `AIOKafkaProducer` argument for a producer of `policy`, named `client_id`."""
    producer = settings.producer
    acks_values: dict[Acks, int | str] = {Acks.NONE: 0, Acks.LEADER: 1, Acks.ALL: "all"}
    return {
        **client_options(settings),
        "client_id": client_id,
        "acks": acks_values[policy.acks],
        "enable_idempotence": policy.enable_idempotence,
        "linger_ms": policy.linger_ms if policy.linger_ms is not None else producer.linger_ms,
        "max_batch_size": producer.max_batch_size,
        "compression_type": (
            producer.compression_type.value if producer.compression_type else None
        ),
        "max_request_size": producer.max_request_size,
        "request_timeout_ms": producer.request_timeout_ms,
        "retry_backoff_ms": producer.retry_backoff_ms,
        "metadata_max_age_ms": producer.metadata_max_age_ms,
        "partitioner": _PARTITIONERS[producer.partitioner],
        "transactional_id": policy.transactional_id,
        "transaction_timeout_ms": policy.transaction_timeout_ms,
    }
