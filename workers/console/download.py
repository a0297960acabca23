"""The subject's download page: a separate listener where a one-time code opens a package.

Served on ``download_host:download_port`` (its own binding, apart from the
console), linked from the package notice through ``download_base_url``
(``<url>/download/<tenant>``). The subject types the code (never in the URL: a
query string ends up in logs and history); the form is protected like the
console's login (a SameSite cookie matched by a hidden field). The code works
once (``workers/dsr/downloads.py``, shared with ``privacyops dsr package``).
Wrong, used or expired codes count against the address: ``download_attempts``
per 15 minutes, then 429 even for a right code.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web

from config import tenants as tenant_config
from config.settings import Settings
from infra.console.limits import RateLimiter
from infra.console.web import HERE as CONSOLE_STATIC_ROOT
from infra.console.web import WINDOW_S, form_state, harden, templates
from infra.runtime.session import Session
from messages.errors import RuleViolation
from workers.dsr import downloads

log = structlog.get_logger("privacyops.download")
ACTOR = "subject:download_page"
COOKIE = "po_download"
TEMPLATES = Path(__file__).resolve().parent / "templates"


class DownloadPage:
    def __init__(self, settings: Settings, opened: Session) -> None:
        self.settings = settings
        self.opened = opened
        self.directory = tenant_config.from_settings(settings)
        self.limiter = RateLimiter(settings.download_attempts, WINDOW_S)
        self.templates = templates([TEMPLATES])

    def app(self) -> web.Application:
        app = web.Application(middlewares=[harden], client_max_size=8 * 1024)
        app.router.add_get("/download/{tenant}", self.form)
        app.router.add_post("/download/{tenant}", self.collect)
        app.router.add_static("/static", CONSOLE_STATIC_ROOT / "static")
        return app

    def _page(
        self, request: web.Request, tenant: str, status: int, message: str = ""
    ) -> web.Response:
        profile = self.directory.profile(tenant)
        state = form_state(request, COOKIE)
        text = self.templates.get_template("download.html").render(
            tenant=tenant,
            name=profile.display_name if profile else tenant,
            message=message,
            state=state,
            admin=None,
            sections=(),
            path="",
            done=None,
            csrf="",
        )
        response = web.Response(status=status, text=text, content_type="text/html")
        response.set_cookie(
            COOKIE,
            state,
            httponly=True,
            samesite="Strict",
            path="/download",
            max_age=3600,
            secure=self.settings.download_base_url is not None
            and self.settings.download_base_url.startswith("https:"),
        )
        return response

    async def form(self, request: web.Request) -> web.Response:
        return self._page(request, request.match_info["tenant"], 200)

    async def collect(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        form = await request.post()
        given, expected = str(form.get("state", "")), request.cookies.get(COOKIE, "")
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            return self._page(
                request, tenant, 403, "The form expired. Please enter the code again."
            )
        key = request.remote or "unknown"
        if self.limiter.blocked(key):
            log.warning("download_limited", tenant=tenant)
            return self._page(request, tenant, 429, "Too many wrong codes. Please try again later.")
        code = str(form.get("code", "")).strip()[:200]
        try:
            handed = await downloads.claim(
                self.opened,
                tenant,
                code,
                ACTOR,
                datetime.now(UTC),
                reviewed=downloads.reviewed(self.directory, tenant),
            )
        except downloads.AwaitingReview:
            return self._page(
                request,
                tenant,
                409,
                "Your information is being checked before release. "
                "Please try again later; your code still works.",
            )
        except RuleViolation:
            self.limiter.failed(key)
            log.info("download_refused", tenant=tenant)
            return self._page(
                request,
                tenant,
                400,
                "This code does not open a package: it is wrong, used or expired.",
            )
        return web.Response(
            body=handed.zipped,
            content_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="{handed.request_id}.zip"',
                "Cache-Control": "no-store",
            },
        )
