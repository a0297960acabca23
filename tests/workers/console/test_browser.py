"""The console and the download page in a real browser (headless Chromium, Selenium).

One browser for the module; each test builds its own world (store, broker, DSR worker,
console). SQLite only: the HTTP tests (test_console.py) run both stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from config.settings import Settings
from infra.publisher import Publisher
from messages.names import Names
from messages.registry import encode
from tests.support.db import sql
from tests.support.helpers import ServiceFactory, consent_changed, queue_depth, wait_until
from tests.workers.console.browser import Browser, start
from tests.workers.console.support import PASSWORD, World, world

pytestmark = [pytest.mark.stores("sqlite"), pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    base = tmp_path_factory.mktemp("chromium")
    started = start(base / "profile", base / "downloads")
    yield started
    started.quit()


@pytest.fixture
async def served(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher, tmp_path: Path
) -> AsyncIterator[World]:
    async with world(settings, start_service, publisher, tmp_path) as running:
        yield running


@pytest.fixture
async def browser(driver: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory):
    downloads = Path(driver.capabilities.get("chrome", {}).get("userDataDir", "")).parent
    page = Browser(driver, downloads / "downloads")
    await page.logout()
    yield page
    await page.logout()


async def log_in(page: Browser, w: World, name: str) -> None:
    await page.get(f"{w.console}/login")
    await page.fill("name", name)
    await page.fill("password", PASSWORD)
    await page.click("login")


async def test_operator_finds_the_overdue_request_approves_and_the_subject_downloads(
    served: World, browser: Browser
) -> None:
    page = browser
    # logged out: every page sends to the login form
    await page.get(f"{served.console}/requests/acme/r-access/package")
    assert (await page.url()).endswith("/login")
    await page.shot("login", docs=True)

    await log_in(page, served, "alice")
    assert (await page.url()).endswith("/requests")
    assert await page.css("tr.overdue td:nth-child(2)") == ["r-late"]
    await page.shot("requests", docs=True)

    # the subject is early: the package waits for review
    await page.get(f"{served.download}/download/acme")
    await page.fill("code", served.code)
    await page.click("collect")
    assert "being checked before release" in await page.text("message")

    await page.get(f"{served.console}/requests/acme/r-access")
    assert await page.text("review") == "waiting for review"
    await page.shot("request", docs=True)
    await page.click("review-package")
    assert "Thandi" not in await page.text("document")
    await page.shot("package-review", docs=True)
    await page.click("approve")
    assert await page.text("done") == "package approved for release"
    assert (await page.text("review")).startswith("approved by alice")

    await page.get(f"{served.download}/download/acme")
    await page.shot("download", docs=True)
    await page.fill("code", served.code)
    await page.submit("collect")
    zipped = page.downloads / "r-access.zip"

    async def saved() -> bool:
        return zipped.exists() and zipped.stat().st_size > 0

    await wait_until(saved)
    assert zipped.read_bytes().startswith(b"PK")
    zipped.unlink()
    await page.get(f"{served.download}/download/acme")
    await page.fill("code", served.code)
    await page.click("collect")
    assert "wrong, used or expired" in await page.text("message")
    assert sql(
        served.settings.db_path,
        "SELECT actor FROM audit_log WHERE action IN ('package_approved', 'package_downloaded')"
        " ORDER BY id",
    ) == [("admin:alice",), ("subject:download_page",)]


async def test_operator_replays_a_dead_letter_and_a_viewer_cannot(
    served: World, browser: Browser, publisher: Publisher
) -> None:
    page = browser
    broken = consent_changed("debtor-open")
    await publisher.publish_raw(encode(broken)[:-7], broken.type, str(broken.message_id))
    names, url = Names(served.settings.namespace), served.settings.amqp_url.get_secret_value()

    async def dead(n: int) -> bool:
        return await queue_depth(url, names.dlq("consent")) == n

    await wait_until(lambda: dead(1))
    letter = str(broken.message_id)

    await log_in(page, served, "victor")
    await page.get(f"{served.console}/deadletters?queue=consent")
    assert letter in await page.text("queue-consent")
    assert not await page.has("replay-consent")  # a viewer has no replay button
    await page.get(f"{served.console}/requests/acme/r-access/package")
    assert not await page.has("approve")
    await page.logout()

    await log_in(page, served, "alice")
    await page.get(f"{served.console}/deadletters?queue=consent")
    await page.shot("deadletters", docs=True)
    await page.click(f"pick-{letter}")
    await page.click("replay-consent")
    assert await page.text("done") == "1 dead letter(s) replayed"
    replayed = sql(
        served.settings.db_path, "SELECT actor FROM audit_log WHERE action = 'dlq_replayed'"
    )
    assert replayed == [("admin:alice",)]
    await page.get(f"{served.console}/incidents")
    await page.shot("incidents", docs=True)
    await page.get(f"{served.console}/consent?tenant=acme&subject=debtor-open")
    assert "withdrawn" in await page.text("consent-state")
    await page.shot("consent", docs=True)
