"""Consent: a subject's current state per channel and purpose, and its history.

What the consent worker holds (POPIA s69, s11(3); CPA s11): the state now, and
every change with its source and outcome, so an Information Officer can answer
"may we contact them, and since when?" The evidence of each change is personal
data: it is not shown here.
"""

from __future__ import annotations

from aiohttp import web

from infra.console.web import Section, console_of, render, tenant_visible


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/consent", page)


SECTION = Section("Consent", "/consent", routes)
STATE = ("channel", "purpose", "status", "effective_at", "source", "updated_at")
HISTORY = ("occurred_at", "channel", "purpose", "status", "source", "outcome", "recorded_at")


async def page(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant", "").strip()
    subject = request.query.get("subject", "").strip()
    state: list[dict[str, object]] = []
    history: list[dict[str, object]] = []
    if tenant and subject:
        tenant_visible(request, tenant)
        async with console_of(request).opened.store.transaction() as tx:
            now = await tx.fetchall(
                f"SELECT {', '.join(STATE)} FROM consent_state WHERE tenant_id = ?"
                " AND subject_ref = ? ORDER BY channel, purpose",
                (tenant, subject),
            )
            past = await tx.fetchall(
                f"SELECT {', '.join(HISTORY)} FROM consent_history WHERE tenant_id = ?"
                " AND subject_ref = ? ORDER BY occurred_at DESC, id DESC LIMIT 500",
                (tenant, subject),
            )
        state = [dict(zip(STATE, r, strict=True)) for r in now]
        history = [dict(zip(HISTORY, r, strict=True)) for r in past]
    return render(
        request,
        "consent.html",
        tenant=tenant,
        subject=subject,
        state=state,
        history=history,
        asked=bool(tenant and subject),
    )
