"""The worker's pure parts: reading events and reply headers, writing replies, dead letters,
the email itself, and its settings."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr

from app import logs
from app.config import (
    Settings,
    SettingsError,
    SmtpBackend,
    SmtpSettings,
    WorkerSettings,
    load_settings,
)
from app.verification import events
from app.verification.events import VerificationEmailRequested
from app.worker import messages
from app.worker.mailer import (
    SUBJECT,
    LogMailer,
    Progress,
    SmtpMailer,
    build_email,
    make_mailer,
)
from app.worker.messages import (
    InvalidReplyHeaders,
    PoisonMessage,
    ReplyAddress,
    ReplyStatus,
    VerificationEmailEvent,
)
from app.worker.sending import ATTEMPT_STEPS, attempt_window_ms
from kafka_events.messages import header

LINK = "https://app.example.com/verify?token=abc&next=%2Fhome"


def _value(**changes: object) -> bytes:
    message = VerificationEmailRequested(email="ada@example.com", redirect_url=LINK).to_message("t")
    body = json.loads(message.value)
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_the_worker_reads_the_event_type_and_version_the_api_writes() -> None:
    fields = VerificationEmailEvent.model_fields
    assert fields["event_type"].annotation.__args__ == (events.EVENT_TYPE,)  # type: ignore[union-attr]
    assert fields["event_version"].annotation.__args__ == (events.EVENT_VERSION,)  # type: ignore[union-attr]


def test_an_event_written_by_the_api_is_read_back_as_written() -> None:
    requested = VerificationEmailRequested(email="ada@example.com", redirect_url=LINK)

    event = messages.parse_event(requested.to_message("t").value)

    assert (event.event_id, event.email, event.redirect_url) == (
        requested.event_id,
        "ada@example.com",
        LINK,  # not normalised: the link must work as sent
    )
    assert event.occurred_at == requested.occurred_at


def test_the_worker_reads_the_correlation_id_the_api_writes() -> None:
    requested = VerificationEmailRequested(email="ada@example.com", redirect_url=LINK)
    headers = list(requested.to_message("t", correlation_id="req-9").headers)

    assert logs.correlation_id_in(headers) == "req-9"
    assert messages.event_id_of(headers) == requested.event_id


@pytest.mark.parametrize("value", [b"", b"two words", b"x" * 65, b"\xff\xfe", b"a\nb"])
def test_an_unusable_correlation_id_is_ignored(value: bytes) -> None:
    assert logs.correlation_id_in([("correlation_id", value)]) is None
    assert logs.correlation_id_in([]) is None


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert messages.parse_event(_value(locale="fr")).email == "ada@example.com"


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (b"", "EmptyValue"),
        (None, "EmptyValue"),
        (b"{not json", "InvalidJson"),
        (b"\xff\xfe", "InvalidJson"),
        (b"[1, 2]", "InvalidEvent"),
        (_value(email=None), "InvalidEvent"),
        (_value(event_type="user.deleted"), "InvalidEvent"),
        (_value(event_version=2), "InvalidEvent"),
        (_value(email="ada@example.com\r\nBcc: all@example.com"), "InvalidEvent"),
        (_value(redirect_url="javascript:alert(1)"), "InvalidEvent"),
        (_value(event_id=""), "InvalidEvent"),
    ],
)
def test_a_poison_value_is_named_by_kind(value: bytes | None, error_type: str) -> None:
    with pytest.raises(PoisonMessage) as caught:
        messages.parse_event(value)

    assert caught.value.error_type == error_type


def test_the_poison_detail_names_the_fields_not_their_values() -> None:
    with pytest.raises(PoisonMessage) as caught:
        messages.parse_event(_value(email="secret-person@", redirect_url="ftp://x"))

    assert "email" in caught.value.detail
    assert "redirect_url" in caught.value.detail
    assert "secret-person" not in caught.value.detail


def test_no_reply_headers_ask_for_no_reply() -> None:
    assert messages.reply_address([("event_id", b"e")]) is None


def test_reply_headers_give_topic_partition_and_the_correlation_id_as_bytes() -> None:
    address = messages.reply_address(
        [
            ("kafka_replyTopic", b"replies"),
            ("kafka_correlationId", b"\x00\xff"),
            ("kafka_replyPartition", b"3"),
        ]
    )

    assert address == ReplyAddress(topic="replies", correlation_id=b"\x00\xff", partition=3)


_REPLY_TO = [("kafka_replyTopic", b"r"), ("kafka_correlationId", b"c")]


@pytest.mark.parametrize(
    "headers",
    [
        [("kafka_replyTopic", b"replies")],
        [("kafka_replyTopic", b"bad topic!"), ("kafka_correlationId", b"c")],
        [("kafka_replyTopic", b"\xff"), ("kafka_correlationId", b"c")],
        [*_REPLY_TO, ("kafka_replyPartition", b"-1")],
        [*_REPLY_TO, ("kafka_replyPartition", b"x")],
    ],
)
def test_unusable_reply_headers_are_refused(headers: list[tuple[str, bytes]]) -> None:
    with pytest.raises(InvalidReplyHeaders):
        messages.reply_address(headers)


def test_the_last_of_repeated_headers_wins() -> None:
    assert header([("a", b"1"), ("a", b"2")], "a") == b"2"


def test_a_reply_value_is_the_contract_json_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    handled_at = datetime(2026, 1, 2, 4, 5, 6, tzinfo=paris)

    value = messages.reply_value(
        event_id="e-1", status=ReplyStatus.FAILED, detail="SMTPDataError", handled_at=handled_at
    )

    assert json.loads(value) == {
        "event_id": "e-1",
        "status": "failed",
        "detail": "SMTPDataError",
        "handled_at": "2026-01-02T03:05:06+00:00",
    }


def test_a_reply_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        messages.reply_value(
            event_id=None,
            status=ReplyStatus.SENT,
            detail=None,
            handled_at=datetime(2026, 1, 1),  # noqa: DTZ001 - the mistake under test
        )


def test_reply_headers_echo_the_correlation_id_and_carry_the_event_id() -> None:
    address = ReplyAddress("r", b"\x01")
    assert messages.reply_headers(address, "e-1") == [
        ("kafka_correlationId", b"\x01"),
        ("event_id", b"e-1"),
    ]
    assert messages.reply_headers(address, None) == [("kafka_correlationId", b"\x01")]
    assert messages.reply_headers(address, "e-1", "req-1") == [
        ("kafka_correlationId", b"\x01"),
        ("event_id", b"e-1"),
        ("correlation_id", b"req-1"),  # the logs' id, so the requester can log it too
    ]


def test_dead_letter_headers_keep_the_original_and_replace_earlier_dlq_headers() -> None:
    headers = messages.dead_letter_headers(
        [("event_id", b"e-1"), ("dlq_attempts", b"9")],
        error_type="SMTPDataError",
        error="451\n  try later",
        attempts=3,
        topic="src",
        partition=2,
        offset=2**40,
    )

    assert headers == [
        ("event_id", b"e-1"),
        ("dlq_error_type", b"SMTPDataError"),
        ("dlq_error", b"451 try later"),
        ("dlq_attempts", b"3"),
        ("dlq_source_topic", b"src"),
        ("dlq_source_partition", b"2"),
        ("dlq_source_offset", str(2**40).encode()),
    ]


def test_shorten_keeps_one_bounded_line() -> None:
    assert messages.shorten("a\nb", 10) == "a b"
    assert messages.shorten("x" * 50, 10) == "xxxxxxx..."


def test_the_email_goes_to_the_event_address_with_the_link() -> None:
    event = messages.parse_event(_value())

    email = build_email(event, "App <no-reply@app.example.com>")

    assert email["To"] == "ada@example.com"
    assert email["From"] == "App <no-reply@app.example.com>"
    assert email["Subject"] == SUBJECT
    assert email["Message-ID"] == f"<{event.event_id}@app.example.com>"
    assert email["Date"] is not None
    body = email.get_body(("plain",))
    assert body is not None
    assert LINK in body.get_content()


def test_an_address_with_a_non_ascii_local_part_is_addressed_as_given() -> None:
    event = messages.parse_event(_value(email="jürgen@exämple.de"))

    email = build_email(event, "no-reply@example.com")

    assert email["To"] == "jürgen@exämple.de"


async def test_the_log_mailer_logs_the_email(caplog: pytest.LogCaptureFixture) -> None:
    email = build_email(messages.parse_event(_value()), "no-reply@example.com")

    with caplog.at_level(logging.INFO, logger="app.worker.mailer"):
        await LogMailer().send(email, Progress())

    assert "ada@example.com" in caplog.text
    # the link, its token masked once the service's logging is set up (app.redaction)
    assert "https://app.example.com/verify?token=" in caplog.text
    assert "next=%2Fhome" in caplog.text


def test_the_backend_setting_picks_the_mailer() -> None:
    assert isinstance(make_mailer(SmtpSettings()), LogMailer)
    assert isinstance(make_mailer(SmtpSettings(backend=SmtpBackend.SMTP)), SmtpMailer)


def test_the_defaults_log_emails_and_name_the_documented_topics() -> None:
    settings = Settings(_env_file=None)

    assert settings.smtp.backend is SmtpBackend.LOG
    assert settings.worker.group_id == "verification-email-worker"
    assert settings.worker.dead_letter_topic == "send.verification.email.dlq"


def test_the_smtp_password_is_never_shown() -> None:
    smtp = SmtpSettings(username="u", password=SecretStr("hunter2-secret"))

    assert "hunter2-secret" not in repr(smtp)
    assert "hunter2-secret" not in str(smtp.model_dump())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP__USERNAME": "u"}, "SMTP__USERNAME and SMTP__PASSWORD go together"),
        ({"SMTP__SENDER": "nobody"}, "give an address"),
        ({"SMTP__TLS": "ssl"}, "SMTP__TLS"),
        ({"WORKER__DEAD_LETTER_TOPIC": "bad topic"}, "WORKER__DEAD_LETTER_TOPIC"),
        (
            {"WORKER__BACKOFF_INITIAL_MS": "5000", "WORKER__BACKOFF_MAX_MS": "100"},
            "must not exceed WORKER__BACKOFF_MAX_MS",
        ),
        ({"WORKER__MAX_ATTEMPTS": "0"}, "WORKER__MAX_ATTEMPTS"),
        (
            {"SMTP__TIMEOUT_MS": "5000", "SMTP__FINAL_REPLY_TIMEOUT_MS": "1000"},
            "SMTP__FINAL_REPLY_TIMEOUT_MS .* must not be shorter than SMTP__TIMEOUT_MS",
        ),
    ],
)
def test_invalid_worker_settings_are_named(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_worker_settings_are_frozen() -> None:
    worker = WorkerSettings()
    with pytest.raises(ValueError, match="frozen"):
        worker.max_attempts = 9  # type: ignore[misc]


def test_the_final_reply_is_waited_for_longer_than_a_command_by_default() -> None:
    smtp = SmtpSettings()

    assert (smtp.timeout_ms, smtp.final_reply_timeout_ms) == (10000, 120000)


def test_by_default_attempts_may_start_for_100_s_and_the_record_ends_within_the_poll() -> None:
    smtp, worker = SmtpSettings(), WorkerSettings()

    window = attempt_window_ms(smtp, worker)
    longest_attempt = ATTEMPT_STEPS * smtp.timeout_ms + smtp.final_reply_timeout_ms
    after = 2 * (worker.produce_timeout_ms + worker.commit_timeout_ms)

    assert window == 100000
    assert window + longest_attempt + after == worker.max_poll_interval_ms


def test_no_retry_is_allowed_when_one_attempt_could_outlast_the_poll_interval() -> None:
    smtp = SmtpSettings(final_reply_timeout_ms=600000)  # RFC 5321's 10 minutes

    assert attempt_window_ms(smtp, WorkerSettings()) == 0
    assert attempt_window_ms(smtp, WorkerSettings(max_poll_interval_ms=900000)) > 0
