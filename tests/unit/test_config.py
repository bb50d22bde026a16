"""Settings: defaults, environment parsing, and errors a person can act on."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from app.config import PolicyName, SettingsError, load_settings
from kafka_events import Acks, Partitioner, SaslMechanism


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # load_settings reads ./.env: run from an empty folder so a developer's file cannot leak in.
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_safe_delivery_policy() -> None:
    settings = load_settings()

    policies = settings.kafka.policies
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (policies.replicated.acks, policies.replicated.enable_idempotence) == (Acks.ALL, True)
    assert (policies.leader.acks, policies.leader.enable_idempotence) == (Acks.LEADER, False)
    assert policies.fire_and_forget.acks is Acks.NONE
    assert policies.replicated.delivery_timeout_ms == 5000
    assert policies.replicated.retry.retries == 5
    assert settings.verification.topic == "send.verification.email"
    assert settings.verification.policy is PolicyName.REPLICATED
    assert settings.admin.token is None


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9093")
    monkeypatch.setenv("KAFKA__POLICIES__REPLICATED__ACKS", "1")
    monkeypatch.setenv("KAFKA__POLICIES__REPLICATED__ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__LINGER_MS", "7")
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__RETRY__RETRIES", "2")
    monkeypatch.setenv("KAFKA__PRODUCER__PARTITIONER", "crc32")
    monkeypatch.setenv("KAFKA__SECURITY__PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA__SECURITY__SASL_USERNAME", "api")
    monkeypatch.setenv("KAFKA__SECURITY__SASL_PASSWORD", "s3cret")

    settings = load_settings()

    assert settings.kafka.bootstrap_list == ["k1:9092", "k2:9093"]
    assert settings.kafka.policies.replicated.acks is Acks.LEADER
    # an override changes one field; the policy's other defaults stay
    assert settings.kafka.policies.leader.linger_ms == 7
    assert settings.kafka.policies.leader.retry.retries == 2
    assert settings.kafka.policies.leader.acks is Acks.LEADER
    assert settings.kafka.policies.leader.retry.multiplier == 2.0
    assert settings.kafka.producer.partitioner is Partitioner.CRC32
    assert settings.kafka.security.sasl_password is not None
    assert settings.kafka.security.sasl_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VERIFICATION__TOPIC=signups.verify\nUNRELATED=1\n")

    assert load_settings().verification.topic == "signups.verify"


@pytest.mark.parametrize(
    ("given", "expected"), [("-1", Acks.ALL), ("all", Acks.ALL), ("0", Acks.NONE)]
)
def test_acks_spellings(monkeypatch: pytest.MonkeyPatch, given: str, expected: Acks) -> None:
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__ACKS", given)

    assert load_settings().kafka.policies.leader.acks is expected


def test_idempotence_with_acks_1_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA__POLICIES__REPLICATED__ACKS", "1")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert (
        "KAFKA__POLICIES__REPLICATED__ACKS=1 conflicts with "
        "KAFKA__POLICIES__REPLICATED__ENABLE_IDEMPOTENCE=true" in message
    )
    assert "Set KAFKA__POLICIES__REPLICATED__ACKS=all" in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("KAFKA__BOOTSTRAP_SERVERS", "localhost", "'localhost' is not host:port"),
        ("KAFKA__BOOTSTRAP_SERVERS", " , ", "at least one broker"),
        ("KAFKA__POLICIES__LEADER__ACKS", "2", "KAFKA__POLICIES__LEADER__ACKS"),
        (
            "KAFKA__POLICIES__REPLICATED__DELIVERY_TIMEOUT_MS",
            "0",
            "KAFKA__POLICIES__REPLICATED__DELIVERY_TIMEOUT_MS",
        ),
        ("KAFKA__PRODUCER__LINGER_MS", "6000", "must be shorter than"),
        ("KAFKA__POLICIES__LEADER__LINGER_MS", "6000", "must be shorter than"),
        ("KAFKA__POLICIES__LEADER__RETRY__FACTOR", "1.5", "RETRY__FACTOR"),
        ("KAFKA__POLICIES__LEADER__RETRY__MULTIPLIER", "0.5", "RETRY__MULTIPLIER"),
        ("STORE__URL", "mysql://x/y", "sqlite\\+aiosqlite"),
        ("ADMIN__TOKEN", "short", "at least 16"),
        ("VERIFICATION__POLICY", "yolo", "VERIFICATION__POLICY"),
        ("KAFKA__PRODUCER__MAX_BATCH_SIZE", "2000000", "must not exceed"),
        ("KAFKA__PRODUCER__COMPRESSION_TYPE", "brotli", "KAFKA__PRODUCER__COMPRESSION_TYPE"),
        ("KAFKA__SECURITY__PROTOCOL", "SASL_SSL", "needs KAFKA__SECURITY__SASL_USERNAME"),
        ("KAFKA__SECURITY__SSL_CAFILE", "/nonexistent/ca.pem", "no file at"),
        ("VERIFICATION__TOPIC", "bad topic!", "VERIFICATION__TOPIC"),
        ("API__PORT", "70000", "API__PORT"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_transactional_id_needs_idempotence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__TRANSACTIONAL_ID", "api-1")

    with pytest.raises(SettingsError, match="TRANSACTIONAL_ID needs"):
        load_settings()


def test_policies_cannot_share_a_transactional_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA__POLICIES__REPLICATED__TRANSACTIONAL_ID", "api-1")
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__ENABLE_IDEMPOTENCE", "true")
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__ACKS", "all")
    monkeypatch.setenv("KAFKA__POLICIES__LEADER__TRANSACTIONAL_ID", "api-1")

    with pytest.raises(SettingsError, match="its own TRANSACTIONAL_ID"):
        load_settings()


def test_several_api_workers_cannot_share_a_transactional_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA__POLICIES__REPLICATED__TRANSACTIONAL_ID", "api-1")
    assert load_settings().api.workers == 1
    monkeypatch.setenv("API__WORKERS", "2")

    with pytest.raises(SettingsError, match="every worker process would use that id"):
        load_settings()


def test_gzip_compression_needs_no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA__PRODUCER__COMPRESSION_TYPE", "gzip")

    assert load_settings().kafka.producer.compression_type is not None


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA, and a client certificate with its key in the clear and encrypted ("key-pw")."""
    ca = trustme.CA()
    client = ca.issue_cert("client@example.com")
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "encrypted_key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pw"),
        )
    )
    (tmp_path / "not-pem.txt").write_text("hello\n")
    files["not_pem"] = tmp_path / "not-pem.txt"
    return files


def _secure(monkeypatch: pytest.MonkeyPatch, protocol: str, **values: object) -> None:
    monkeypatch.setenv("KAFKA__SECURITY__PROTOCOL", protocol)
    for name, value in values.items():
        monkeypatch.setenv(f"KAFKA__SECURITY__{name.upper()}", str(value))


def test_sasl_ssl_with_scram_and_a_private_ca(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]
) -> None:
    _secure(
        monkeypatch,
        "SASL_SSL",
        sasl_username="api",
        sasl_password="s3cret",
        ssl_cafile=tls_files["ca"],
    )

    security = load_settings().kafka.security

    assert (security.uses_sasl, security.uses_ssl) == (True, True)
    assert security.sasl_mechanism is SaslMechanism.SCRAM_SHA_512
    assert security.ssl_cafile == tls_files["ca"]


def test_sasl_ssl_without_a_ca_file_trusts_the_system_cas(monkeypatch: pytest.MonkeyPatch) -> None:
    _secure(monkeypatch, "SASL_SSL", sasl_username="api", sasl_password="s3cret")

    assert load_settings().kafka.security.ssl_cafile is None


@pytest.mark.parametrize(
    ("protocol", "values", "fragment"),
    [
        # credentials that would silently not be used
        (
            "PLAINTEXT",
            {"sasl_username": "api", "sasl_password": "s3cret"},
            "KAFKA__SECURITY__SASL_USERNAME, KAFKA__SECURITY__SASL_PASSWORD set, but "
            "KAFKA__SECURITY__PROTOCOL=PLAINTEXT does not use them",
        ),
        (
            "SSL",
            {"sasl_password": "s3cret"},
            "KAFKA__SECURITY__SASL_PASSWORD set, but KAFKA__SECURITY__PROTOCOL=SSL does not use it",
        ),
        # a CA that would silently not be used: the connection would not be encrypted
        (
            "SASL_PLAINTEXT",
            {"sasl_username": "api", "sasl_password": "s3cret", "ssl_cafile": "ca"},
            "KAFKA__SECURITY__SSL_CAFILE set, but KAFKA__SECURITY__PROTOCOL=SASL_PLAINTEXT",
        ),
        ("SSL", {"ssl_cafile": "not_pem"}, "is not a PEM CA bundle"),
        ("SSL", {"ssl_key_password": "key-pw"}, "SSL_KEY_PASSWORD needs"),
        ("SSL", {"ssl_certfile": "cert"}, "needs both"),
        # an encrypted key without its password: an error, not a password prompt
        (
            "SSL",
            {"ssl_certfile": "cert", "ssl_keyfile": "encrypted_key"},
            "cannot load the client certificate and key",
        ),
        (
            "SSL",
            {"ssl_certfile": "cert", "ssl_keyfile": "encrypted_key", "ssl_key_password": "wrong"},
            "cannot load the client certificate and key",
        ),
        ("SSL", {"ssl_certfile": "cert", "ssl_keyfile": "ca"}, "cannot load the client"),
    ],
)
def test_security_settings_that_cannot_work_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    tls_files: dict[str, Path],
    protocol: str,
    values: dict[str, str],
    fragment: str,
) -> None:
    files = {name: tls_files.get(value, value) for name, value in values.items()}
    _secure(monkeypatch, protocol, **files)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert fragment in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert "key-pw" not in str(caught.value)


@pytest.mark.parametrize("key", ["key", "encrypted_key"])
def test_a_client_certificate_loads_with_its_key(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path], key: str
) -> None:
    password = {"ssl_key_password": "key-pw"} if key == "encrypted_key" else {}
    _secure(
        monkeypatch,
        "SSL",
        ssl_cafile=tls_files["ca"],
        ssl_certfile=tls_files["cert"],
        ssl_keyfile=tls_files[key],
        **password,
    )

    security = load_settings().kafka.security

    assert security.ssl_keyfile == tls_files[key]
    assert security.key_password == password.get("ssl_key_password", "")


# --- secrets: never in a repr, a str or a settings error ------------------------------------

SECRETS = {
    "KAFKA__SECURITY__SASL_PASSWORD": "sasl-secret-value",
    "KAFKA__SECURITY__SSL_KEY_PASSWORD": "key-pw",  # the tls_files key's
    "ADMIN__TOKEN": "admin-secret-value-0123",
    "SMTP__PASSWORD": "smtp-secret-value",
    "STORE__URL": "postgresql+asyncpg://app:store-secret-value@db.example.com/events",
}
SECRET_VALUES = [
    "sasl-secret-value",
    "key-pw",
    "admin-secret-value-0123",
    "smtp-secret-value",
    "store-secret-value",
]


def _set_secrets(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path], **changes: str | None
) -> None:
    env: dict[str, str | None] = {
        **SECRETS,
        "KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        "KAFKA__SECURITY__SSL_CAFILE": str(tls_files["ca"]),
        "KAFKA__SECURITY__SSL_CERTFILE": str(tls_files["cert"]),
        "KAFKA__SECURITY__SSL_KEYFILE": str(tls_files["encrypted_key"]),
        "KAFKA__SECURITY__SASL_USERNAME": "api",
        "SMTP__USERNAME": "mailer",
        **changes,
    }
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_no_secret_shows_in_the_settings_repr_or_str(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]
) -> None:
    _set_secrets(monkeypatch, tls_files)

    settings = load_settings()

    shown = f"{settings!r} {settings!s} {settings.store!r} {settings.kafka.security!s}"
    assert [secret for secret in SECRET_VALUES if secret in shown] == []
    assert "postgresql+asyncpg://app:***@db.example.com/events" in shown
    # the code that needs them still has them
    assert settings.store.url == SECRETS["STORE__URL"]
    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == SECRETS["ADMIN__TOKEN"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"ADMIN__TOKEN": "tiny-secret"}, "ADMIN__TOKEN: use at least 16"),
        ({"SMTP__USERNAME": None}, "SMTP__USERNAME and SMTP__PASSWORD go together"),
        ({"KAFKA__SECURITY__SASL_USERNAME": None}, "needs KAFKA__SECURITY__SASL_USERNAME"),
        ({"STORE__URL": "mysql://app:store-secret-value@db/events"}, "STORE__URL"),
        ({"API__PORT": "0"}, "API__PORT"),  # an unrelated error, with every secret set
    ],
)
def test_settings_errors_show_no_secret(
    monkeypatch: pytest.MonkeyPatch,
    tls_files: dict[str, Path],
    changes: dict[str, str | None],
    fragment: str,
) -> None:
    _set_secrets(monkeypatch, tls_files, **changes)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    # the whole traceback, as a log line with exc_info would show it
    shown = "".join(traceback.format_exception(caught.value))
    assert fragment in shown
    assert [secret for secret in [*SECRET_VALUES, "tiny-secret"] if secret in shown] == []
