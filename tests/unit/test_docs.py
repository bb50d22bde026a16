"""The docs pages link only to files this service serves itself (no CDN).

The browser test (`tests/browser/test_docs_page.py`) renders them; these check the links.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(f"127.0.0.1:{closed_port()}", "t-docs", connect_timeout_ms=200)
    async with running_app(settings) as running:
        yield running.client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_their_assets_from_this_service(
    client: httpx.AsyncClient, page: str
) -> None:
    html = await client.get(page)

    assert html.status_code == 200
    links = re.findall(r"""(?:src|href|[Uu]rl)\s*[:=]\s*['"]([^'"]+)['"]""", html.text)
    assert links
    assert [link for link in links if "//" in link] == []
    for link in links:
        assert (await client.get(link)).status_code == 200, link


async def test_swagger_ui_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200


async def test_docs_pages_stay_out_of_the_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]
