"""Headless Chromium from Debian's packages, driven by Selenium through /usr/bin/chromedriver.

``scripts/ensure-chromium`` installs both (scripts/test calls it). Selenium calls block,
and the console under test serves from the test's own event loop: every call goes
through ``asyncio.to_thread`` so the server keeps answering while the browser waits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,720",
)
ROOT = Path(__file__).resolve().parents[3]
#: Test artefacts (gitignored); ``CONSOLE_DOCS=1`` also refreshes docs/console/*.png.
ARTEFACTS = Path(os.environ.get("CONSOLE_ARTEFACTS", ROOT / "artifacts" / "console"))
DOCS = ROOT / "docs" / "console"


def start(profile: Path, downloads: Path) -> webdriver.Chrome:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/ensure-chromium", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        pytest.fail(f"chromium did not start: {exc.msg}", pytrace=False)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


class Browser:
    """The few things a test does with the page, each off the event loop."""

    def __init__(self, driver: webdriver.Chrome, downloads: Path) -> None:
        self.driver = driver
        self.downloads = downloads

    async def _run(self, call: Any, *args: Any) -> Any:
        return await asyncio.to_thread(call, *args)

    async def get(self, url: str) -> None:
        await self._run(self.driver.get, url)

    async def fill(self, element_id: str, text: str) -> None:
        def fill() -> None:
            field = self.driver.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(text)

        await self._run(fill)

    async def click(self, element_id: str) -> None:
        """Click, and when that submits a form or follows a link, wait for the new page."""

        def click() -> None:
            old = self.driver.find_element(By.TAG_NAME, "html")
            target = self.driver.find_element(By.ID, element_id)
            navigates = target.tag_name in ("a", "button")
            target.click()
            if navigates:
                WebDriverWait(self.driver, 20).until(staleness_of(old))

        await self._run(click)

    async def submit(self, element_id: str) -> None:
        """Click a button whose answer is a download (the page stays)."""
        await self._run(lambda: self.driver.find_element(By.ID, element_id).click())

    async def has(self, element_id: str) -> bool:
        found = await self._run(self.driver.find_elements, By.ID, element_id)
        return bool(found)

    async def text(self, element_id: str = "") -> str:
        if not element_id:
            return str(await self._run(lambda: self.driver.find_element(By.TAG_NAME, "body").text))
        return str(await self._run(lambda: self.driver.find_element(By.ID, element_id).text))

    async def css(self, selector: str) -> list[str]:
        def find() -> list[str]:
            return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, selector)]

        found: list[str] = await self._run(find)
        return found

    async def url(self) -> str:
        return str(await self._run(lambda: self.driver.current_url))

    async def shot(self, name: str, docs: bool = False) -> None:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTEFACTS / f"{name}.png"
        await self._run(self.driver.save_screenshot, str(target))
        if docs and os.environ.get("CONSOLE_DOCS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, DOCS / f"{name}.png")

    async def logout(self) -> None:
        if await self.has("who"):
            await self.click("logout")
        await self._run(self.driver.delete_all_cookies)
