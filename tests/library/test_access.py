"""Telling a refusal (fatal at start-up) from an outage (retried), without a broker.

The real refusals (a wrong password, an untrusted certificate) are provoked against a real
broker in tests/integration/test_security.py.
"""

from __future__ import annotations

import logging
import ssl

import pytest
from aiokafka.errors import (  # type: ignore[import-untyped]
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    NodeNotReadyError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from pydantic import SecretStr

from app.config import KafkaSettings
from kafka_events import ProducerConfig, SecurityConfig, SecurityProtocol, access
from tests.helpers.waiting import closed_port

PASSWORD = "pw-never-shown"
SASL = SecurityConfig(
    protocol=SecurityProtocol.SASL_PLAINTEXT, sasl_username="api", sasl_password=SecretStr(PASSWORD)
)


def _verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code, error.verify_message = code, message
    return error


def test_an_authentication_failure_names_the_user_and_never_the_password() -> None:
    # a broker that quotes what it was sent must not leak the password either
    error = SaslAuthenticationFailed(f"invalid credentials for api/{PASSWORD}")

    refused = access.refusal(error, SASL, "k1:9093")

    assert refused is not None
    message = str(refused)
    assert message.startswith(
        "Kafka refused this client: SASL authentication failed for user 'api' "
        "(SCRAM-SHA-512) at k1:9093"
    )
    assert PASSWORD not in message
    assert "`security.sasl_password`" in message  # the field to fix, named as configured


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (UnsupportedSaslMechanismError(), "does not offer SASL mechanism SCRAM-SHA-512"),
        (IllegalSaslStateError(), "does not expect SASL"),
        (GroupAuthorizationFailedError("g"), "user 'api' is not authorised"),
        (
            _verification_error(20, "unable to get local issuer certificate"),
            "`security.ssl_cafile`",
        ),
        (_verification_error(62, "Hostname mismatch"), "`security.ssl_check_hostname`"),
        (_verification_error(64, "IP address mismatch"), "`security.ssl_check_hostname`"),
    ],
)
def test_refusals_say_what_to_check(error: Exception, fragment: str) -> None:
    refused = access.refusal(error, SASL)

    assert refused is not None
    assert fragment in str(refused)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        KafkaConnectionError("Unable to bootstrap"),
        NodeNotReadyError(),
        ssl.SSLEOFError(),
    ],
)
def test_outages_are_not_refusals(error: Exception) -> None:
    assert access.refusal(error, SASL) is None


async def test_no_broker_answering_is_not_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    settings = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}",
        security=SASL,
        producer=ProducerConfig(connect_timeout_ms=1000),
    )

    with caplog.at_level(logging.WARNING, logger="kafka_events.access"):
        accepted = await access.check(settings, client_id="test")

    assert accepted is False
    assert "no Kafka broker answered" in caplog.text
    assert "ConnectionRefusedError" in caplog.text
