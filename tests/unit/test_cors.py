"""CORS is off unless API__CORS_ORIGINS lists origins; then only those, GET and POST."""

from __future__ import annotations

import pytest

from app.config import ApiSettings, Settings, load_settings
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port

ALLOWED = "https://app.example.com"


def _settings(cors_origins: str = "") -> Settings:
    settings = make_settings(f"127.0.0.1:{closed_port()}", "t-cors", connect_timeout_ms=200)
    return settings.model_copy(update={"api": ApiSettings(cors_origins=cors_origins)})


async def test_no_cors_headers_by_default() -> None:
    async with running_app(_settings()) as running:
        simple = await running.client.get("/health/live", headers={"Origin": ALLOWED})
        preflight = await running.client.options(
            "/verification-emails",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
        )

    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in preflight.headers


async def test_only_configured_origins_get_cors_headers() -> None:
    async with running_app(_settings(f"{ALLOWED}/, http://localhost:3000")) as running:
        allowed = await running.client.get("/health/live", headers={"Origin": ALLOWED})
        other = await running.client.get("/health/live", headers={"Origin": "https://evil.example"})
        preflight = await running.client.options(
            "/verification-emails",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        delete = await running.client.options(
            "/admin/messages",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"},
        )

    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert delete.status_code == 400  # a method not allowed is refused at preflight


@pytest.mark.parametrize("origin", ["*", "https://app.example.com/path", "app.example.com"])
def test_only_plain_origins_are_accepted(origin: str) -> None:
    with pytest.raises(Exception, match="API__CORS_ORIGINS") as refused:
        load_settings(_env_file=None, api={"cors_origins": origin})

    assert "is not an origin" in str(refused.value)
