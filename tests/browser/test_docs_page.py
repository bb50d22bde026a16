"""The docs pages in a real headless browser, with every request off this machine refused.

The app runs as a real process (`python -m app`) against the session's broker; Debian's
Chromium (installed by `devtools/system-deps.sh`) is driven by Playwright. A request to any
host but the loopback is aborted and recorded, so a page that needs a CDN fails here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import read_at
from tests.helpers.processes import app_process
from tests.helpers.waiting import closed_port, repo_root

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

# Generous: two cores shared with other suites, and Chromium's first start is slow.
LAUNCH_TIMEOUT_MS = 60_000
STEP_TIMEOUT_MS = 30_000
SCREENSHOT = repo_root() / "artifacts" / "docs-page.png"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("Chromium is missing: `make system-deps` installs Debian's package")
    return found


@dataclass
class Offline:
    """Requests the page tried to send off this machine (all aborted), and its script errors."""

    refused: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        url = route.request.url
        if _is_loopback(url):
            self.served.append(url)
            await route.continue_()
        else:
            self.refused.append(url)
            await route.abort("internetdisconnected")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:  # a name: never resolved, refused
        return False


@asynccontextmanager
async def offline_page() -> AsyncIterator[tuple[Page, Offline]]:
    """A headless Chromium page that may reach the loopback only."""
    offline = Offline()
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox"],  # tests run as root, where Chromium's sandbox cannot start
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            context: BrowserContext = await browser.new_context(
                viewport={"width": 1280, "height": 900}
            )
            context.set_default_timeout(STEP_TIMEOUT_MS)
            context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
            await context.route("**/*", offline.route)
            page = await context.new_page()
            page.on("pageerror", lambda error: offline.errors.append(str(error)))
            yield page, offline
            await context.close()
        finally:
            await browser.close()


@pytest.fixture
async def api(kafka_broker: KafkaCluster, topic: str, tmp_path: Path) -> AsyncIterator[str]:
    """The app as a process publishing to this test's topic; its base URL."""
    env = {
        "KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "STORE__URL": f"sqlite+aiosqlite:///{tmp_path}/store.db",
        "VERIFICATION__TOPIC": topic,
        "REPLY__TOPIC": f"{topic}.reply",
    }
    port = closed_port()
    async with app_process(env, tmp_path, port):
        yield f"http://127.0.0.1:{port}"


async def operations_in_schema(base_url: str) -> set[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        spec = (await client.get("/openapi.json")).json()
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


async def test_docs_page_renders_every_route_offline_and_tries_one(
    api: str, kafka_broker: KafkaCluster, topic: str
) -> None:
    expected = await operations_in_schema(api)
    body = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}

    async with offline_page() as (page, offline):
        await page.goto(f"{api}/docs", wait_until="networkidle")
        blocks = page.locator(".opblock")
        await expect(blocks).to_have_count(len(expected), timeout=STEP_TIMEOUT_MS)
        shown: set[str] = set()
        for block in await blocks.all():
            method = await block.locator(".opblock-summary-method").inner_text()
            path = await block.locator(".opblock-summary-path").get_attribute("data-path")
            shown.add(f"{method.strip().upper()} {path}")

        post = page.locator(".opblock-post").filter(
            has=page.locator('.opblock-summary-path[data-path="/verification-emails"]')
        )
        await post.locator(".opblock-summary").click()
        await post.get_by_role("button", name="Try it out").click()
        await post.locator("textarea.body-param__text").fill(json.dumps(body, indent=2))
        await post.get_by_role("button", name="Execute").click()
        answer = post.locator(".live-responses-table .response").first
        await expect(answer.locator(".response-col_status")).to_have_text(
            "202", timeout=STEP_TIMEOUT_MS
        )
        response_body = answer.locator(".response-col_description .highlight-code pre")
        receipt = json.loads(await response_body.inner_text())
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=SCREENSHOT, full_page=True, timeout=STEP_TIMEOUT_MS)

    assert offline.refused == []
    assert offline.errors == []
    assert f"{api}/docs/assets/swagger-ui-bundle.js" in offline.served
    assert shown == expected
    assert isinstance(receipt["offset"], int)
    assert receipt["topic"] == topic
    stored = await read_at(
        kafka_broker.bootstrap_servers, topic, receipt["partition"], receipt["offset"]
    )
    assert json.loads(stored.value)["email"] == body["email"]
    assert SCREENSHOT.stat().st_size > 10_000


async def test_redoc_page_renders_every_route_offline(api: str) -> None:
    expected = await operations_in_schema(api)

    async with offline_page() as (page, offline):
        await page.goto(f"{api}/redoc", wait_until="networkidle")
        # ReDoc marks each operation's section with its operationId (an `operation/` anchor).
        operations = page.locator('[data-section-id^="operation/"]')
        await expect(operations).to_have_count(len(expected), timeout=STEP_TIMEOUT_MS)
        await page.screenshot(path=SCREENSHOT.with_name("redoc-page.png"), timeout=STEP_TIMEOUT_MS)

    assert offline.refused == []
    assert offline.errors == []
    assert f"{api}/docs/assets/redoc.standalone.js" in offline.served
