"""Does Kafka accept this client? A start-up check that tells a refusal from an outage.

aiokafka's bootstrap turns every failure to connect into one
`KafkaConnectionError("Unable to bootstrap from ...")`: a wrong password, an untrusted
certificate and a broker that is down look the same, and a client that reconnects in the
background would retry a wrong password forever. `check` opens one connection to each bootstrap
server with aiokafka's own connection code (TLS handshake, API versions, SASL) and sorts the
outcome:

- a broker accepted the connection: the protocol, the trust store and the credentials work;
- a broker refused it: `AccessRefused`, which retrying cannot fix (SASL authentication failed,
  the SASL mechanism is not enabled, SASL sent to a listener without it, the broker's
  certificate is not trusted or does not name the host);
- no broker answered: nothing is known yet; the caller goes on as without the check (the API
  starts degraded and reconnects).

`refusal(error)` sorts an error raised by a client's start the same way; authorisation failures
surface there (e.g. a transactional id the user may not use), since connecting needs no ACL.

Raises `kafka_events.errors.AccessRefused`: one line with the cause, the user, the broker,
and the settings to check (in backticks, relative to `KafkaConfig`); never the password.

`Any` from the untyped aiokafka stays in this module.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka.conn import create_conn  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from kafka_events import options
from kafka_events.config import KafkaConfig, SecurityConfig
from kafka_events.errors import AccessRefused

logger = logging.getLogger(__name__)

_AUTHENTICATION = (SaslAuthenticationFailed, AuthenticationFailedError)
_MECHANISM = (UnsupportedSaslMechanismError, AuthenticationMethodNotSupported)
_AUTHORISATION = (
    ClusterAuthorizationFailedError,
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)
_CLOSE_WAIT_S = 1.0


def refusal(
    error: BaseException, security: SecurityConfig, broker: str | None = None
) -> AccessRefused | None:
    """`AccessRefused` describing `error` if it is a refusal, else None (e.g. an outage)."""
    at = f" at {broker}" if broker else ""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or "certificate verify failed"
        if error.verify_code in _NAME_MISMATCH:
            hint = (
                "connect by a name the certificate lists (`bootstrap_servers`), or set "
                "`security.ssl_check_hostname`=false (not recommended)"
            )
        else:
            trusted = security.ssl_cafile or "the system's CAs (`security.ssl_cafile` unset)"
            hint = (
                f"the client trusts {trusted}; set `security.ssl_cafile` to the CA that "
                "signed the brokers' certificates"
            )
        return _refused(
            f"TLS: the broker's certificate{at} was not accepted: {reason}; {hint}", security
        )
    if isinstance(error, IllegalSaslStateError):  # SASL sent to a listener without it
        return _refused(
            f"the listener{at} does not expect SASL ({_detail(error)}); check "
            "`security.protocol` and `bootstrap_servers`",
            security,
        )
    if isinstance(error, _MECHANISM):
        return _refused(
            f"the broker{at} does not offer SASL mechanism {security.sasl_mechanism.value} "
            f"({_detail(error)}); check `security.sasl_mechanism`",
            security,
        )
    if isinstance(error, _AUTHENTICATION):
        return _refused(
            f"SASL authentication failed for user {security.sasl_username!r} "
            f"({security.sasl_mechanism.value}){at}: {_detail(error)}; check "
            "`security.sasl_username` and `security.sasl_password`",
            security,
        )
    if isinstance(error, _AUTHORISATION):
        who = f"user {security.sasl_username!r}" if security.uses_sasl else "this client"
        return _refused(
            f"{who} is not authorised{at}: {type(error).__name__}: {_detail(error)}; grant it "
            "the ACLs it needs on the brokers",
            security,
        )
    return None


async def check(settings: KafkaConfig, *, client_id: str) -> bool:
    """Connect once to every bootstrap server (concurrently, each bounded by
    `connect_timeout_ms`) and close again.

    Returns:
        True if a broker accepted the connection; False if none answered (unknown yet).

    Raises:
        AccessRefused: no broker accepted, and at least one refused this client.
    """
    client = options.client_options(settings)
    del client["bootstrap_servers"]
    servers = settings.bootstrap_list
    outcomes = await asyncio.gather(
        *(_connect(server, settings, client_id=client_id, client=client) for server in servers)
    )
    failures = [(s, o) for s, o in zip(servers, outcomes, strict=True) if o is not None]
    if len(failures) < len(servers):
        return True
    for server, error in failures:
        refused = refusal(error, settings.security, server)
        if refused is not None:
            raise refused
    seen = "; ".join(f"{server}: {_describe(error)}" for server, error in failures)
    logger.warning("no Kafka broker answered: %s", _scrub(seen, settings.security))
    return False


async def _connect(
    server: str, settings: KafkaConfig, *, client_id: str, client: dict[str, Any]
) -> BaseException | None:
    """None if `server` accepted a connection (TLS, API versions, SASL), else the error."""
    host, _, port = server.rpartition(":")
    timeout_ms = settings.producer.connect_timeout_ms
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            connection: Any = await create_conn(
                host.strip("[]"),
                int(port),
                client_id=client_id,
                request_timeout_ms=timeout_ms,
                **client,
            )
    except (KafkaError, OSError, TimeoutError) as error:
        return error
    # Wait (briefly) until the socket is really closed, so no transport is left behind.
    await asyncio.wait({connection.close()}, timeout=_CLOSE_WAIT_S)
    return None


def _refused(text: str, security: SecurityConfig) -> AccessRefused:
    return AccessRefused(f"Kafka refused this client: {_scrub(text, security)}")


def _detail(error: BaseException) -> str:
    """The broker's (or aiokafka's) own words, else the error's name."""
    if error.args and isinstance(error.args[0], str) and error.args[0]:
        return error.args[0].rstrip(".")
    description = getattr(error, "description", "")
    return str(description).rstrip(".") if description else type(error).__name__


def _describe(error: BaseException) -> str:
    name, text = type(error).__name__, str(error)
    if not text or name in text:  # aiokafka's errors name themselves
        return text or name
    return f"{name}: {text}"


def _scrub(text: str, security: SecurityConfig) -> str:
    """`text` on one line and without the password, whatever quoted it (nothing should)."""
    if security.sasl_password is not None:
        secret = security.sasl_password.get_secret_value()
        if secret:
            text = text.replace(secret, "**********")
    return " ".join(text.split())  # one line
