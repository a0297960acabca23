"""The console tests' world: a DSR worker that made an access package (held for review) and
an overdue request, three admins, and the console and download page serving it; an HTTP
client with cookies, logging in, and reading a page's form token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from config.settings import Settings
from config.tenants import DEFAULT_PATH
from infra.console import accounts
from infra.publisher import Publisher
from infra.runtime.session import session
from tests.support.dsr import answered, notices, request, start_dsr
from tests.support.helpers import ServiceFactory
from workers import registry
from workers.console import serving

PASSWORD = "correct horse battery"
ADMINS = (("alice", "operator", ()), ("victor", "viewer", ()), ("bob", "operator", ("bravo",)))


@dataclass(frozen=True)
class World:
    settings: Settings
    console: str
    download: str
    code: str


def review_tenants(tmp_path: Path) -> Path:
    """The shipped tenants file with acme reviewing packages before release."""
    text = DEFAULT_PATH.read_text()
    text = text.replace("[tenants.acme]\n", "[tenants.acme]\npackage_review = true\n", 1)
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    return path


@asynccontextmanager
async def world(
    settings: Settings,
    start_service: ServiceFactory,
    publisher: Publisher,
    tmp_path: Path,
    **changes: object,
) -> AsyncIterator[World]:
    settings = settings.with_changes(
        **changes,
        tenants_path=review_tenants(tmp_path),
        export_dir=tmp_path / "exports",
        console_port=0,
        download_port=0,
        download_base_url="http://127.0.0.1:1",
    )
    await start_dsr(settings, start_service, tmp_path)
    await publisher.publish(request("r-access", "access"))
    old = datetime.now(UTC) - timedelta(days=45)
    await publisher.publish(request("r-late", "erasure", verified=False, received_at=old))
    assert await answered(settings.db_path, "r-access") == "completed"
    assert await answered(settings.db_path, "r-late") == "awaiting_verification"
    ready = dict(notices(settings.db_path, "r-access"))["dsr_package_ready"]
    assert ready["download_url"] == "http://127.0.0.1:1/download/acme"
    async with session(settings, registry.schemas(), broker=True) as opened:
        now = datetime.now(UTC)
        for name, role, tenants in ADMINS:
            await accounts.add(opened.store, name, PASSWORD, role, tenants, now)
        async with serving(settings, opened, registry.names()) as running:
            yield World(
                settings,
                f"http://127.0.0.1:{running.console_port}",
                f"http://127.0.0.1:{running.download_port}",
                str(ready["token"]),
            )


def csrf_of(page: str) -> str:
    found = re.search(r'name="(?:csrf|state)" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=20)
    )


async def login(http: aiohttp.ClientSession, w: World, name: str, password: str = PASSWORD) -> int:
    async with http.get(f"{w.console}/login") as page:
        token = csrf_of(await page.text())
    form = {"name": name, "password": password, "csrf": token}
    async with http.post(f"{w.console}/login", data=form, allow_redirects=False) as answer:
        return answer.status


async def csrf(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as page:
        assert page.status == 200
        return csrf_of(await page.text())
