"""Incidents: severity, status and the 72-hour clock; confirm, contain, close; the report.

The regulator must be told as soon as reasonably possible (POPIA s22(1)), within 72
hours of awareness where the GDPR applies (art 33(1)): the list shows each report's
due time, hours left and flag (``workers/security/rules.py``). Actions call
``workers/security/admin.py`` as ``privacyops incidents`` does, actor ``admin:<name>``;
their events leave through the console's outbox relays.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from infra.console.web import (
    Section,
    console_of,
    current,
    operator,
    redirect,
    render,
    tenant_visible,
)
from messages.errors import UnknownSubject
from messages.security import IncidentStatus
from workers.console.scope import tenants_clause
from workers.security import admin as incidents
from workers.security.cli import LIST_FIELDS, flag_now

COLUMNS = (
    "i.tenant_id, i.incident_id, i.status, i.severity, i.score, i.alert_count,"
    " i.subject_count, i.opened_at, i.compromise, r.due_at, r.sent_at"
)


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/incidents", listing)
    router.add_get("/incidents/{tenant}/{incident_id}", detail)
    router.add_get("/incidents/{tenant}/{incident_id}/report", report_page)
    router.add_get("/incidents/{tenant}/{incident_id}/report.json", report_json)
    router.add_post("/incidents/{tenant}/{incident_id}/{action}", act)


SECTION = Section("Incidents", "/incidents", routes)


async def listing(request: web.Request) -> web.Response:
    clause = tenants_clause(request, request.query.get("tenant"), "i.tenant_id")
    rows: list[dict[str, Any]] = []
    if clause is not None:
        where, params = clause
        show_closed = request.query.get("closed") == "1"
        sql = (
            f"SELECT {COLUMNS} FROM security_incidents i LEFT JOIN security_reports r"
            " ON r.tenant_id = i.tenant_id AND r.incident_id = i.incident_id"
            f" WHERE {where}" + ("" if show_closed else " AND i.status != 'closed'")
        )
        async with console_of(request).opened.store.transaction() as tx:
            found = await tx.fetchall(sql + " ORDER BY i.opened_at DESC LIMIT 1000", params)
        rows = [_clock(request, dict(zip(LIST_FIELDS, row, strict=True))) for row in found]
    return render(request, "incidents.html", rows=rows, query=request.query)


def _clock(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    due, sent = row.get("report_due_at"), row.get("report_sent_at")
    row["report_flag"] = flag_now(due, sent, console_of(request).settings)
    left = (datetime.fromisoformat(due) - datetime.now(UTC)) if due and not sent else None
    row["hours_left"] = round(left.total_seconds() / 3600, 1) if left is not None else None
    return row


async def _load(request: web.Request) -> tuple[str, str]:
    tenant, incident_id = request.match_info["tenant"], request.match_info["incident_id"]
    tenant_visible(request, tenant)
    return tenant, incident_id


async def _report(request: web.Request) -> tuple[dict[str, Any], dict[str, Any] | None]:
    tenant, incident_id = await _load(request)
    async with console_of(request).opened.store.transaction() as tx:
        incident = await incidents.load(tx, incident_id, tenant)
        report = await incidents.report_of(tx, incident)
        timeline = await tx.fetchall(
            "SELECT at, change, from_value, to_value, cause FROM security_timeline"
            " WHERE tenant_id = ? AND incident_id = ? ORDER BY id",
            (tenant, incident_id),
        )
    overview = {
        "tenant_id": tenant,
        "incident_id": incident_id,
        "status": incident.status.value,
        "severity": incident.severity.value,
        "compromise": incident.compromise.value if incident.compromise else None,
        "opened_at": incident.opened_at.isoformat(),
        "subjects": incident.subject_count,
        "timeline": [
            dict(zip(("at", "change", "from", "to", "cause"), t, strict=True)) for t in timeline
        ],
    }
    if report is not None:
        report["flag"] = flag_now(
            report["due_at"], report["report_date"], console_of(request).settings
        )
    return overview, report


async def detail(request: web.Request) -> web.Response:
    overview, report = await _report(request)
    return render(request, "incident.html", i=overview, report=report)


async def report_page(request: web.Request) -> web.Response:
    overview, report = await _report(request)
    if report is None:
        raise UnknownSubject("no regulator report: no compromise was recorded")
    return render(request, "incident_report.html", i=overview, report=report)


async def report_json(request: web.Request) -> web.Response:
    _, report = await _report(request)
    if report is None:
        raise UnknownSubject("no regulator report: no compromise was recorded")
    return web.Response(
        text=json.dumps(report, indent=2, default=str), content_type="application/json"
    )


async def act(request: web.Request) -> web.StreamResponse:
    """confirm, contain, close, report-sent: the CLI's functions, the admin as actor."""
    admin = operator(request)
    tenant, incident_id = await _load(request)
    action = request.match_info["action"]
    opened = console_of(request).opened
    now, name, actor = datetime.now(UTC), current(request).admin.name, admin.actor
    if action == "confirm":
        await incidents.confirm(
            opened.store, opened.outboxes, incident_id, name, now, tenant, actor=actor
        )
    elif action in ("contain", "close"):
        status = IncidentStatus.CONTAINED if action == "contain" else IncidentStatus.CLOSED
        await incidents.set_status(
            opened.store, opened.outboxes, incident_id, status, name, now, tenant, actor=actor
        )
    elif action == "report-sent":
        reason = str((await request.post()).get("reason", "")).strip() or None
        await incidents.mark_report_sent(
            opened.store, incident_id, name, now, reason, tenant, actor=actor
        )
    else:
        raise web.HTTPNotFound()
    raise redirect(f"/incidents/{tenant}/{incident_id}", f"{action.replace('-', ' ')} recorded")
