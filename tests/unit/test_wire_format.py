"""The Kafka message a verification request becomes, and how its partition is chosen."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime

import pytest

from app.config import KafkaSettings, PolicyName
from app.verification.events import VerificationEmailRequested
from kafka_events import ProducerConfig
from kafka_events.errors import EncodingError
from kafka_events.options import crc32_partitioner, producer_client_id, producer_options


def test_event_becomes_keyed_json_with_headers() -> None:
    event = VerificationEmailRequested(
        email="ada@example.com",
        redirect_url="https://app.example.com/verify",
        event_id="e-1",
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )

    message = event.to_message("send.verification.email")

    assert message.topic == "send.verification.email"
    assert message.key == b"ada@example.com"
    assert message.event_id == "e-1"
    assert json.loads(message.value) == {
        "event_id": "e-1",
        "event_type": "verification_email.requested",
        "event_version": 1,
        "occurred_at": "2026-01-02T03:04:05+00:00",
        "email": "ada@example.com",
        "redirect_url": "https://app.example.com/verify",
    }
    assert dict(message.headers) == {
        "event_id": b"e-1",
        "event_type": b"verification_email.requested",
        "content_type": b"application/json",
    }


def test_the_requests_correlation_id_travels_in_a_header() -> None:
    event = VerificationEmailRequested(email="ada@example.com", redirect_url="https://x.example/")

    message = event.to_message("t", correlation_id="req-1")

    assert dict(message.headers)["correlation_id"] == b"req-1"
    assert b"req-1" not in message.value  # not part of the event itself


def test_non_ascii_text_is_sent_as_utf8() -> None:
    event = VerificationEmailRequested(
        email="jöran@exämple.com", redirect_url="https://x.example/ü"
    )

    message = event.to_message("t")

    assert message.key == "jöran@exämple.com".encode()
    assert 'redirect_url":"https://x.example/ü"'.encode() in message.value


@pytest.mark.parametrize("field", ["email", "redirect_url"])
def test_a_value_that_cannot_be_encoded_is_an_encoding_error(field: str) -> None:
    fields = {"email": "ada@example.com", "redirect_url": "https://x.example/"}
    fields[field] += "\ud800"  # a lone surrogate: a str, but not Unicode text
    event = VerificationEmailRequested(
        email=fields["email"], redirect_url=fields["redirect_url"], event_id="e-9"
    )

    with pytest.raises(EncodingError) as raised:
        event.to_message("t")

    assert raised.value.event_id == "e-9"
    assert raised.value.sent is False
    assert raised.value.cause == "UnicodeEncodeError"


def test_each_event_gets_its_own_id() -> None:
    first = VerificationEmailRequested(email="a@example.com", redirect_url="https://x.example/")
    second = VerificationEmailRequested(email="a@example.com", redirect_url="https://x.example/")

    assert first.event_id != second.event_id


def test_crc32_partitioner_is_stable_per_key() -> None:
    partitions = [0, 1, 2, 3, 4, 5]
    chosen = {crc32_partitioner(b"ada@example.com", partitions, partitions) for _ in range(20)}

    assert chosen == {zlib.crc32(b"ada@example.com") % 6}


def test_crc32_partitioner_spreads_keyless_records_over_available_partitions() -> None:
    chosen = {crc32_partitioner(None, [0, 1, 2], [1, 2]) for _ in range(200)}

    assert chosen == {1, 2}


def test_producer_options_carry_every_setting() -> None:
    settings = KafkaSettings(
        bootstrap_servers="a:1,b:2",
        producer=ProducerConfig(
            linger_ms=5,
            compression_type="gzip",  # type: ignore[arg-type]
            client_id="svc",
        ),
    )

    leader, replicated, fire_and_forget = (
        producer_options(
            settings, settings.policies.get(name), client_id=producer_client_id(settings, name)
        )
        for name in (PolicyName.LEADER, PolicyName.REPLICATED, PolicyName.FIRE_AND_FORGET)
    )

    assert leader["bootstrap_servers"] == ["a:1", "b:2"]
    assert (leader["acks"], leader["enable_idempotence"]) == (1, False)
    assert (replicated["acks"], replicated["enable_idempotence"]) == ("all", True)
    assert (fire_and_forget["acks"], fire_and_forget["enable_idempotence"]) == (0, False)
    assert leader["linger_ms"] == 5
    assert leader["compression_type"] == "gzip"
    assert leader["client_id"] == "svc-leader"
    assert replicated["client_id"] == "svc-replicated"
    assert leader["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in leader
