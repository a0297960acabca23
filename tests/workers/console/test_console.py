"""The console and the download page over HTTP: real store, broker, DSR worker and server."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import aiohttp
import pytest

from config.settings import Settings
from infra.publisher import Publisher
from tests.support.db import sql
from tests.support.helpers import ServiceFactory
from tests.workers.console.support import PASSWORD, World, client, csrf, csrf_of, login, world


@pytest.fixture
async def served(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher, tmp_path: Path
):
    async with world(settings, start_service, publisher, tmp_path) as running:
        yield running


async def download(http: aiohttp.ClientSession, w: World, code: str) -> aiohttp.ClientResponse:
    url = f"{w.download}/download/acme"
    state = await csrf(http, url)
    answer = await http.post(url, data={"code": code, "state": state})
    await answer.read()
    return answer


@pytest.mark.stores("sqlite")  # about the server, not the store
async def test_only_a_logged_in_operator_with_the_form_token_may_approve(served: World) -> None:
    approve = f"{served.console}/requests/acme/r-access/package/approve"
    async with client() as http:  # logged out
        async with http.get(f"{served.console}/requests", allow_redirects=False) as page:
            assert page.status == 303
            assert page.headers["Location"] == "/login"
        async with http.post(approve, data={"csrf": "x"}) as refused:
            assert refused.status == 403
    async with client() as http:  # an operator, but a forged form
        assert await login(http, served, "alice") == 303
        async with http.post(approve, data={"csrf": "forged"}) as refused:
            assert refused.status == 403
    async with client() as http:  # a viewer, with the right form token
        assert await login(http, served, "victor") == 303
        token = await csrf(http, f"{served.console}/requests/acme/r-access/package")
        async with http.post(approve, data={"csrf": token}) as refused:
            assert refused.status == 403
    assert sql(served.settings.db_path, "SELECT * FROM console_package_reviews") == []


async def test_login_sets_a_strict_httponly_cookie_and_the_list_flags_the_overdue(
    served: World,
) -> None:
    async with client() as http:
        async with http.get(f"{served.console}/login") as page:
            token = csrf_of(await page.text())
        form = {"name": "alice", "password": PASSWORD, "csrf": token}
        async with http.post(f"{served.console}/login", data=form, allow_redirects=False) as answer:
            assert answer.status == 303
            cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
        async with http.get(f"{served.console}/requests?deadline=overdue") as page:
            text = await page.text()
        assert 'class="overdue" data-request="r-late"' in text
        assert "r-access" not in text
        async with http.get(f"{served.console}/requests.csv") as exported:
            rows = list(csv.DictReader(io.StringIO(await exported.text())))
        late = next(r for r in rows if r["request_id"] == "r-late")
        assert late["deadline"] == "overdue"
        assert int(late["days_left"]) < 0
    audit = sql(
        served.settings.db_path,
        "SELECT actor FROM audit_log WHERE action = 'requests_exported'",
    )
    assert audit == [("admin:alice",)]


@pytest.mark.stores("sqlite")  # about the server, not the store
async def test_behind_tls_the_cookies_are_secure(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher, tmp_path: Path
) -> None:
    async with (
        world(settings, start_service, publisher, tmp_path, console_tls=True) as w,
        client() as http,
    ):
        async with http.get(f"{w.console}/login") as page:
            cookie = page.headers["Set-Cookie"]
        assert "Secure" in cookie
        assert "HttpOnly" in cookie


@pytest.mark.stores("sqlite")  # about the server, not the store
async def test_login_is_rate_limited_even_for_the_right_password(served: World) -> None:
    async with client() as http:
        for _ in range(served.settings.console_login_attempts):
            assert await login(http, served, "alice", "wrong password!") == 401
        assert await login(http, served, "alice") == 429
        assert await login(http, served, "victor") == 303  # another name is not blocked


async def test_an_admin_restricted_to_a_tenant_sees_nothing_of_another(served: World) -> None:
    async with client() as http:
        assert await login(http, served, "bob") == 303
        async with http.get(f"{served.console}/requests") as page:
            assert "r-access" not in await page.text()
        async with http.get(f"{served.console}/requests/acme/r-access") as hidden:
            assert hidden.status == 404


async def test_the_package_waits_for_approval_then_downloads_once(served: World) -> None:
    async with client() as subject:
        held = await download(subject, served, served.code)
        assert held.status == 409  # being reviewed; the code is not used up
    async with client() as http:
        assert await login(http, served, "alice") == 303
        base = f"{served.console}/requests/acme/r-access"
        async with http.get(f"{base}/package") as page:
            text = await page.text()
        assert "Thandi" not in text  # masked
        token = csrf_of(text)
        async with http.post(f"{base}/package/reveal", data={"csrf": token, "reason": "QA"}) as r:
            assert "Thandi" in await r.text()
        async with http.post(f"{base}/package/approve", data={"csrf": token}) as approved:
            assert "package approved" in await approved.text()
    async with client() as subject:
        first = await download(subject, served, served.code)
        assert first.status == 200
        assert first.headers["Content-Disposition"] == 'attachment; filename="r-access.zip"'
        archive = zipfile.ZipFile(io.BytesIO(await first.read()))
        assert "subject.json" in archive.namelist()
        again = await download(subject, served, served.code)
        assert again.status == 400
    actors = sql(
        served.settings.db_path,
        "SELECT action, actor FROM audit_log WHERE action IN"
        " ('package_revealed', 'package_approved', 'package_downloaded') ORDER BY id",
    )
    assert actors[:3] == [
        ("package_revealed", "admin:alice"),
        ("package_approved", "admin:alice"),
        ("package_downloaded", "subject:download_page"),
    ]


@pytest.mark.stores("sqlite")  # about the server, not the store
async def test_wrong_codes_are_rate_limited_then_even_the_right_one_waits(
    served: World,
) -> None:
    async with client() as subject:
        for _ in range(served.settings.download_attempts):
            assert (await download(subject, served, "not-the-code")).status == 400
        assert (await download(subject, served, served.code)).status == 429


async def test_a_request_shows_its_progress_on_each_data_source(served: World) -> None:
    """Issue 15: the detail shows per-source progress (issue 13's steps): the access request
    read the embedded store in round 0, and the step is done."""
    async with client() as http:
        assert await login(http, served, "alice") == 303
        async with http.get(f"{served.console}/requests/acme/r-access") as page:
            text = await page.text()
    section = text[text.index('id="sources"') : text.index("Notices sent")]
    assert "<td>0</td><td>embedded</td><td>done</td>" in section
