"""Settings: defaults, environment parsing, and errors a person can act on."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from app.config import Acks, Partitioner, PolicyName, SettingsError, load_settings


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


# --- secrets: never in a repr, a str or a settings error ------------------------------------

SECRETS = {
    "KAFKA__SECURITY__SASL_PASSWORD": "sasl-secret-value",
    "KAFKA__SECURITY__SSL_KEY_PASSWORD": "key-secret-value",
    "ADMIN__TOKEN": "admin-secret-value-0123",
    "SMTP__PASSWORD": "smtp-secret-value",
    "STORE__URL": "postgresql+asyncpg://app:store-secret-value@db.example.com/events",
}
SECRET_VALUES = [
    "sasl-secret-value",
    "key-secret-value",
    "admin-secret-value-0123",
    "smtp-secret-value",
    "store-secret-value",
]


def _set_secrets(monkeypatch: pytest.MonkeyPatch, **changes: str | None) -> None:
    env: dict[str, str | None] = {
        **SECRETS,
        "KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA__SECURITY__SASL_USERNAME": "api",
        "SMTP__USERNAME": "mailer",
        **changes,
    }
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_no_secret_shows_in_the_settings_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_secrets(monkeypatch)

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
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, str | None], fragment: str
) -> None:
    _set_secrets(monkeypatch, **changes)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    # the whole traceback, as a log line with exc_info would show it
    shown = "".join(traceback.format_exception(caught.value))
    assert fragment in shown
    assert [secret for secret in [*SECRET_VALUES, "tiny-secret"] if secret in shown] == []
