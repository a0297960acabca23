"""The console's web server: login, sessions, CSRF, headers, and the sections workers give it.

aiohttp serves server-rendered Jinja2 pages (autoescaped; no JavaScript). Every
request but ``/login`` and ``/static`` needs a live session (``accounts.session``):
a GET without one is sent to the login page, anything else is refused (403).

* **Cookies**: ``po_console`` holds the session token: HttpOnly, SameSite=Strict,
  Secure when the console is reached over TLS (``console_tls``, or a TLS socket).
* **CSRF**: every POST carries the form field ``csrf``; a logged-in session's must
  equal the session's token, the login form's the pre-login cookie's (both compared
  in constant time). A POST without it is refused before any handler runs.
* **Login** is rate-limited per name and address (``console_login_attempts`` per
  15 minutes), answered 429 once exceeded, even for the right password.
* **Audit**: ``audit`` writes one row per action, actor ``admin:<name>``, in the
  tenant acted on (``infra/runtime/worker.py``'s ``Effects``), committed before the
  page answers.

A ``Section`` is one menu entry and its routes; ``workers/console`` lists them.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from config.settings import Settings
from infra.console import accounts
from infra.console.accounts import Admin, LoggedIn
from infra.console.limits import RateLimiter
from infra.redaction import describe_error
from infra.runtime.session import Session
from infra.runtime.worker import Effects, commit_effects
from messages.errors import PermanentError, PrivacyOpsError, UnknownSubject

log = structlog.get_logger("privacyops.console")

COOKIE = "po_console"
LOGIN_COOKIE = "po_login"
HERE = Path(__file__).resolve().parent
WINDOW_S = 15 * 60
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Section:
    """A menu entry (``title`` at ``path``) and the routes that serve it."""

    title: str
    path: str
    routes: Callable[[web.UrlDispatcher], None]


@dataclass
class Console:
    """What every page handler reaches through ``console_of(request)``."""

    settings: Settings
    opened: Session
    sections: Sequence[Section]
    templates: Environment
    logins: RateLimiter
    #: Every registered worker's name (the dead-letter queues to show).
    worker_names: tuple[str, ...] = ()


CONSOLE = web.AppKey("console", Console)
#: The request's live session, set by ``_guard``.
LOGIN = web.RequestKey("login", LoggedIn)


def templates(directories: Sequence[Path]) -> Environment:
    env = Environment(
        loader=FileSystemLoader([HERE / "templates", *directories]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def build(
    settings: Settings,
    opened: Session,
    sections: Sequence[Section],
    template_dirs: Sequence[Path],
    worker_names: Sequence[str] = (),
) -> web.Application:
    """The console application: generic routes, then each section's."""
    app = web.Application(middlewares=[harden, _errors, _guard], client_max_size=64 * 1024)
    app[CONSOLE] = Console(
        settings,
        opened,
        sections,
        templates(template_dirs),
        RateLimiter(settings.console_login_attempts, WINDOW_S),
        tuple(worker_names),
    )
    app.router.add_get("/", _home)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_static("/static", HERE / "static")
    for section in sections:
        section.routes(app.router)
    return app


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def current(request: web.Request) -> LoggedIn:
    return request[LOGIN]


def operator(request: web.Request) -> Admin:
    """The logged-in admin, who must be an operator to act (a viewer gets 403)."""
    admin = current(request).admin
    if not admin.may_act:
        log.warning("console_forbidden", admin=admin.name, path=request.path)
        raise web.HTTPForbidden(text="viewers may look, not act\n")
    return admin


def tenant_visible(request: web.Request, tenant_id: str) -> None:
    """404 (not 403: do not confirm it exists) for a tenant outside the admin's list."""
    if not current(request).admin.sees(tenant_id):
        raise web.HTTPNotFound(text="not found\n")


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    console = console_of(request)
    login: LoggedIn | None = request.get(LOGIN)
    page = console.templates.get_template(name).render(
        admin=login.admin if login else None,
        csrf=login.csrf if login else "",
        sections=console.sections,
        path=request.path,
        done=request.query.get("done"),
        **context,
    )
    return web.Response(status=status, text=page, content_type="text/html")


def redirect(location: str, done: str | None = None) -> web.HTTPSeeOther:
    """After a POST: see the page again (with a short note of what was done)."""
    if done:
        location += ("&" if "?" in location else "?") + "done=" + done
    return web.HTTPSeeOther(location)


async def audit(
    request: web.Request,
    tenant_id: str,
    action: str,
    subject_ref: str | None,
    target_id: str | None = None,
    **details: Any,
) -> None:
    """One audit row naming the admin (``admin:<name>``), committed now."""
    admin = current(request).admin
    effects = Effects.standalone("console", tenant_id, actor=admin.actor)
    effects.message_id = target_id
    effects.audit(action, subject_ref, **details)
    await commit_effects(console_of(request).opened.store, None, effects)


# -- middlewares --------------------------------------------------------------------------


@web.middleware
async def harden(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No caching of pages with personal data, no framing, no scripts, no referrer."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden(exc.headers)
        raise
    _harden(response.headers)
    return response


def _harden(headers: Any) -> None:
    headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    )
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The project's errors as a page: not found 404, a refused action 409, else 503."""
    try:
        return await handler(request)
    except UnknownSubject as exc:
        return _error(request, 404, exc)
    except PermanentError as exc:
        return _error(request, 409, exc)
    except PrivacyOpsError as exc:
        return _error(request, 503, exc)


def _error(request: web.Request, status: int, exc: PrivacyOpsError) -> web.Response:
    log.info("console_refused", path=request.path, code=exc.code)
    return render(request, "error.html", status, message=describe_error(exc), code=exc.code)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A live session for everything but the login page and the stylesheet; CSRF on POST."""
    if request.path == "/favicon.ico":
        raise web.HTTPNotFound()
    if request.path.startswith("/static/") or request.path == "/login":
        return await handler(request)
    console = console_of(request)
    token = request.cookies.get(COOKIE)
    login = await accounts.session(console.opened.store, token, _now()) if token else None
    if login is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login")
        raise web.HTTPForbidden(text="log in first\n")
    request[LOGIN] = login
    if request.method == "POST":
        form = await request.post()
        if not _same(str(form.get("csrf", "")), login.csrf):
            log.warning("console_csrf_refused", admin=login.admin.name, path=request.path)
            raise web.HTTPForbidden(text="the form is stale or forged; reload the page\n")
    return await handler(request)


def _same(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _now() -> datetime:
    return datetime.now(UTC)


def secure(request: web.Request) -> bool:
    return console_of(request).settings.console_tls or request.secure


# -- login and logout ---------------------------------------------------------------------


async def _home(request: web.Request) -> web.StreamResponse:
    sections = console_of(request).sections
    raise web.HTTPSeeOther(sections[0].path if sections else "/login")


async def _login_form(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    state = form_state(request, LOGIN_COOKIE)
    response = render(request, "login.html", status, login_csrf=state, error=error)
    response.set_cookie(
        LOGIN_COOKIE,
        state,
        httponly=True,
        samesite="Strict",
        secure=secure(request),
        path="/login",
        max_age=3600,
    )
    return response


def form_state(request: web.Request, cookie: str) -> str:
    """The pre-login form token: the browser's own if it has one (a second tab, or a
    stray request sent to the login page, must not void the form on screen), else new."""
    given = request.cookies.get(cookie, "")
    return given if len(given) == 32 and given.isascii() else secrets.token_urlsafe(24)


async def _login(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    if not _same(str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")):
        raise web.HTTPForbidden(text="the login form is stale; reload it\n")
    name = str(form.get("name", "")).strip().lower()[:64]
    key = f"{request.remote}|{name}"
    if console.logins.blocked(key):
        log.warning("console_login_limited", admin=name)
        return await _login_form(request, 429, "Too many failed attempts. Try again later.")
    settings = console.settings
    lifetime = timedelta(hours=settings.console_session_hours)
    login = await accounts.login(
        console.opened.store, name, str(form.get("password", "")), _now(), lifetime
    )
    if login is None:
        console.logins.failed(key)
        log.warning("console_login_failed", admin=name)
        return await _login_form(request, 401, "Wrong name or password.")
    console.logins.clear(key)
    log.info("console_login", admin=login.admin.name, role=login.admin.role)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE,
        login.token,
        httponly=True,
        samesite="Strict",
        secure=secure(request),
        path="/",
        max_age=int(lifetime.total_seconds()),
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    login = current(request)
    await accounts.logout(console_of(request).opened.store, login.token)
    log.info("console_logout", admin=login.admin.name)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# -- serving ------------------------------------------------------------------------------


class Listener:
    """One aiohttp application on one address (the console, the download page)."""

    def __init__(self, app: web.Application, name: str, timeout_s: float) -> None:
        self._app = app
        self._name = name
        self._timeout = timeout_s
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=self._timeout
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise PrivacyOpsError(
                f"cannot serve the {self._name} on {host}:{port}: {type(exc).__name__}"
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("listener_started", listener=self._name, host=host, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
