"""Validation of a request's address and redirect URL: RFC lengths, no user info, and the hosts
a verification email may link to (`VERIFICATION__REDIRECT_HOSTS`, else any public host).

Through the real app (its lifespan running, no broker: an accepted request gets 503, recorded,
a refused one 422 before anything is published or counted), and the host rules as units.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import Settings, SettingsError, VerificationSettings, load_settings
from app.main import create_app
from app.verification import hosts
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port

EMAIL = "ada@example.com"
LONG_LABEL = "a" * 64
# 4 labels of 63 and one of 1: 257 octets with the dots
LONG_NAME = ".".join(["a" * 63] * 4) + ".com"


def _settings(redirect_hosts: str = "") -> Settings:
    base = make_settings(
        f"127.0.0.1:{closed_port()}", "t-redirects", delivery_timeout_ms=200, connect_timeout_ms=200
    )
    verification = base.verification.model_copy(
        update={"redirect_hosts": ",".join(hosts.parse_allowed(redirect_hosts))}
    )
    return base.model_copy(update={"verification": verification})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(_settings()) as running:
        yield running.client


@pytest.fixture
async def listed_client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(_settings("app.example.com, *.tenants.example.org, 10.0.0.7")) as app:
        yield app.client


async def _post(client: httpx.AsyncClient, email: str, url: str) -> httpx.Response:
    return await client.post("/verification-emails", json={"email": email, "redirect_url": url})


def _problems(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    return list(body["errors"])


@pytest.mark.parametrize(
    ("email", "kind"),
    [
        ("a" * 65 + "@example.com", "email_local_part_too_long"),
        ("é" * 33 + "@example.com", "email_local_part_too_long"),  # 33 characters, 66 octets
        (f"ada@{LONG_LABEL}.example.com", "value_error"),
        ("ada@" + ".".join(["a" * 60] * 5) + ".com", "value_error"),  # domain over 253
        ("a" * 64 + "@" + ".".join(["b" * 47] * 4) + ".com", "value_error"),  # whole over 254
    ],
)
async def test_addresses_over_the_rfc_lengths_are_refused(
    client: httpx.AsyncClient, email: str, kind: str
) -> None:
    problems = _problems(await _post(client, email, "https://app.example.com/verify"))

    assert [(p["loc"], p["type"]) for p in problems] == [(["body", "email"], kind)]


async def test_addresses_at_the_rfc_lengths_are_accepted(client: httpx.AsyncClient) -> None:
    local = await _post(client, "a" * 64 + "@example.com", "https://app.example.com/verify")
    octets = await _post(client, "é" * 32 + "@example.com", "https://app.example.com/verify")

    assert (local.status_code, octets.status_code) == (503, 503)  # accepted, then recorded


@pytest.mark.parametrize(
    ("url", "kind", "words"),
    [
        ("https://app.example.com@evil.example/verify", "url_userinfo", "user info"),
        ("https://user:pass@app.example.com/verify", "url_userinfo", "user info"),
        ("https://:secret@app.example.com/verify", "url_userinfo", "user info"),
        (f"https://{LONG_LABEL}.example.com/", "url_host_invalid", "63 octets"),
        (f"https://{LONG_NAME}/", "url_host_invalid", "253 octets"),
        ("https://app..example.com/", "url_host_invalid", "empty label"),
        ("http://localhost/verify", "redirect_host_refused", "loopback name"),
        ("http://LOCALHOST./verify", "redirect_host_refused", "loopback name"),
        ("http://api.localhost/verify", "redirect_host_refused", "loopback name"),
        ("http://127.0.0.1/", "redirect_host_refused", "loopback address"),
        ("http://127.10.20.30:8080/", "redirect_host_refused", "loopback address"),
        ("http://2130706433/", "redirect_host_refused", "loopback address"),
        ("http://0x7f000001/", "redirect_host_refused", "loopback address"),
        ("http://0x7f.1/", "redirect_host_refused", "loopback address"),
        ("http://0177.0.0.1/", "redirect_host_refused", "loopback address"),
        ("http://127.1/", "redirect_host_refused", "loopback address"),
        ("http://%31%32%37.0.0.1/", "redirect_host_refused", "loopback address"),
        ("http://[::1]/", "redirect_host_refused", "loopback address"),
        ("http://[0:0:0:0:0:0:0:1]/", "redirect_host_refused", "loopback address"),
        ("http://[::ffff:127.0.0.1]/", "redirect_host_refused", "loopback address"),
        ("http://[::ffff:7f00:1]/", "redirect_host_refused", "loopback address"),
        ("http://[64:ff9b::127.0.0.1]/", "redirect_host_refused", "loopback address"),
        ("http://[2002:7f00:1::]/", "redirect_host_refused", "loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "redirect_host_refused", "metadata"),
        ("http://2852039166/", "redirect_host_refused", "metadata"),  # 169.254.169.254
        ("http://[::ffff:169.254.169.254]/", "redirect_host_refused", "metadata"),
        ("http://[fd00:ec2::254]/", "redirect_host_refused", "metadata"),
        ("http://100.100.100.200/", "redirect_host_refused", "metadata"),
        ("http://metadata.google.internal/", "redirect_host_refused", "metadata"),
        ("http://METADATA.google.internal./", "redirect_host_refused", "metadata"),
        ("http://metadata/computeMetadata/v1/", "redirect_host_refused", "metadata"),
        ("http://169.254.1.1/", "redirect_host_refused", "link-local"),
        ("http://[fe80::1]/", "redirect_host_refused", "link-local"),
        ("http://10.0.0.7/", "redirect_host_refused", "private"),
        ("http://192.168.1.1/", "redirect_host_refused", "private"),
        ("http://[fd12:3456::1]/", "redirect_host_refused", "private"),
        ("http://100.64.0.1/", "redirect_host_refused", "not a public address"),
        ("http://0.0.0.0/", "redirect_host_refused", "unspecified"),
        ("http://0/", "redirect_host_refused", "unspecified"),
        ("http://[::]/", "redirect_host_refused", "unspecified"),
        ("http://224.0.0.1/", "redirect_host_refused", "multicast"),
        ("http://printer.local/", "redirect_host_refused", "special-use name (.local)"),
        ("http://db.corp.internal/", "redirect_host_refused", "special-use name (.internal)"),
        ("http://intranet/", "redirect_host_refused", "one label"),
    ],
)
async def test_refused_redirect_urls_get_422_naming_the_field(
    client: httpx.AsyncClient, url: str, kind: str, words: str
) -> None:
    problems = _problems(await _post(client, EMAIL, url))

    assert [(p["loc"], p["type"]) for p in problems] == [(["body", "redirect_url"], kind)]
    assert words in problems[0]["msg"]


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/verify",
        "https://app.example.com./verify",  # the root's dot
        "https://bücher.example/verify",
        "https://93.184.215.14/verify",  # a public address
        "https://[2606:4700::1111]/verify",
        "https://" + ".".join(["a" * 63] * 3) + ".example/",  # labels of 63, 201 octets
        "https://app.example.com/verify?next=http://127.0.0.1/",  # a loopback in the query
    ],
)
async def test_public_redirect_urls_are_accepted_when_no_host_is_listed(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await _post(client, EMAIL, url)

    assert response.status_code == 503, response.text  # accepted; no broker, so recorded


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://app.example.com/verify", True),
        ("https://APP.example.com./verify", True),
        ("https://acme.tenants.example.org/verify", True),
        ("https://a.b.tenants.example.org/verify", True),
        ("http://10.0.0.7/verify", True),  # private, but listed
        ("http://167772167/verify", True),  # 10.0.0.7 spelled as an integer
        ("https://tenants.example.org/verify", False),  # the wildcard covers subdomains only
        ("https://evil.example/verify", False),
        ("https://app.example.com.evil.example/verify", False),
        ("https://eviltenants.example.org/verify", False),
        ("http://127.0.0.1/verify", False),
        ("http://169.254.169.254/", False),
    ],
)
async def test_with_hosts_listed_only_those_are_accepted(
    listed_client: httpx.AsyncClient, url: str, accepted: bool
) -> None:
    response = await _post(listed_client, EMAIL, url)

    if accepted:
        assert response.status_code == 503, response.text
    else:
        problems = _problems(response)
        assert [(p["loc"], p["type"]) for p in problems] == [
            (["body", "redirect_url"], "redirect_host_refused")
        ]
        assert problems[0]["msg"] == "the host is not one this service links to"


async def test_a_listed_loopback_host_is_accepted() -> None:
    async with running_app(_settings("localhost, [::1]")) as running:
        named = await _post(running.client, EMAIL, "http://localhost:3000/verify")
        address = await _post(running.client, EMAIL, "http://[0::1]:3000/verify")

    assert (named.status_code, address.status_code) == (503, 503)


async def test_a_refused_request_does_not_count_against_the_rate_limit() -> None:
    settings = _settings()
    settings = settings.model_copy(
        update={"rate_limit": settings.rate_limit.model_copy(update={"enabled": True})}
    )
    async with running_app(settings) as running:
        refused = [await _post(running.client, EMAIL, "http://127.0.0.1/") for _ in range(6)]
        accepted = await _post(running.client, EMAIL, "https://app.example.com/verify")

    assert {r.status_code for r in refused} == {422}
    assert accepted.status_code == 503


def test_an_empty_host_list_is_warned_about_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.main"):
        create_app(_settings())
        open_warnings = [r for r in caplog.records if "REDIRECT_HOSTS is empty" in r.message]
        caplog.clear()
        create_app(_settings("app.example.com"))
        listed_warnings = [r for r in caplog.records if "REDIRECT_HOSTS" in r.message]

    assert [r.levelno for r in open_warnings] == [logging.WARNING]
    assert listed_warnings == []


def test_the_host_list_is_read_from_the_environment_normalised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "VERIFICATION__REDIRECT_HOSTS", " App.Example.com., *.Bücher.example,::1, 2130706433"
    )

    settings = load_settings(_env_file=None)

    assert settings.verification.redirect_host_list == (
        "app.example.com",
        "*.xn--bcher-kva.example",
        "[::1]",
        "127.0.0.1",
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("app.example.com:8443", "not a host"),
        ("https://app.example.com", "not a host"),
        ("app.example.com/verify", "not a host"),
        ("user@app.example.com", "not a host"),
        ("[::1]:80", "not a host"),
        ("*", "not a host"),
        ("*.10.0.0.1", "wildcard applies to names"),
        ("a..b", "empty label"),
        (f"{LONG_LABEL}.example.com", "63 octets"),
    ],
)
def test_a_host_list_entry_that_is_not_a_host_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, words: str
) -> None:
    monkeypatch.setenv("VERIFICATION__REDIRECT_HOSTS", value)

    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)

    assert "VERIFICATION__REDIRECT_HOSTS" in str(refused.value)
    assert words in str(refused.value)


def test_the_schema_documents_each_refusal() -> None:
    schema = VerificationSettings.model_json_schema()
    assert "redirect_hosts" in schema["properties"]
    spec = create_app(_settings()).openapi()
    fields = spec["components"]["schemas"]["VerificationEmailRequest"]["properties"]

    for words in ("user info", "253 octets", "loopback", "link-local", "metadata", "2130706433"):
        assert words in fields["redirect_url"]["description"]
    for words in ("64 before the @-sign", "253", "63"):
        assert words in fields["email"]["description"]
