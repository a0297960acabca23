"""Requests: the register (list, filters, CSV), a request's detail, and package review.

The list is the register a regulator asks for (POPIA s23, s55(1)(b); GDPR art 30):
tenant, kind, status, due date and days left, overdue and due-soon marked
(docs/rules.md "Deadlines", counted in the tenant's zone). Where a tenant sets
``package_review``, an access package waits for an operator's approval here
before the subject's code opens it (``workers/dsr/downloads.py``); the reviewer
sees the package with every personal value masked, unless they reveal it with a
reason, which is audited first.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from config import tenants as tenant_config
from infra.console import tables as console_tables
from infra.console.web import (
    Section,
    audit,
    console_of,
    operator,
    redirect,
    render,
    tenant_visible,
)
from infra.redaction import redact_text
from messages.errors import RuleViolation, UnknownSubject
from workers.console.scope import tenants_clause
from workers.dsr import downloads, package, steps
from workers.dsr.rules import deadline_state, local_date

FINAL = ("completed", "partially_completed", "refused")
COLUMNS = ("tenant_id", "request_id", "kind", "status", "received_at", "due_on", "extended")
CSV_FIELDS = (*COLUMNS, "days_left", "deadline")
MASK = "•••"


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/requests", listing)
    router.add_get("/requests.csv", export)
    router.add_get("/requests/{tenant}/{request_id}", detail)
    router.add_get("/requests/{tenant}/{request_id}/package", review)
    router.add_post("/requests/{tenant}/{request_id}/package/reveal", reveal)
    router.add_post("/requests/{tenant}/{request_id}/package/approve", approve)


SECTION = Section("Requests", "/requests", routes)


async def rows_of(request: web.Request) -> list[dict[str, Any]]:
    """The requests the filters and the admin's tenants select, with their deadline state."""
    q = request.query
    clause = tenants_clause(request, q.get("tenant"))
    if clause is None:
        return []
    where, params = clause
    sql = f"SELECT {', '.join(COLUMNS)} FROM dsr_requests WHERE {where}"
    args: list[Any] = list(params)
    for field in ("status", "kind"):
        if q.get(field):
            sql += f" AND {field} = ?"
            args.append(q[field])
    console = console_of(request)
    async with console.opened.store.transaction() as tx:
        found = await tx.fetchall(sql + " ORDER BY due_on, request_id LIMIT 5000", args)
    directory = tenant_config.from_settings(console.settings)
    now = datetime.now(UTC)
    rows = []
    for row in found:
        r = dict(zip(COLUMNS, row, strict=True))
        today = local_date(now, directory.zone(r["tenant_id"], console.settings.timezone))
        due = date.fromisoformat(r["due_on"])
        final = r["status"] in FINAL
        r["days_left"] = None if final else (due - today).days
        r["deadline"] = None if final else deadline_state(due, today)
        rows.append(r)
    if q.get("deadline") in ("overdue", "due_soon"):
        rows = [r for r in rows if r["deadline"] == q["deadline"]]
    elif q.get("deadline") == "flagged":
        rows = [r for r in rows if r["deadline"]]
    return rows


async def listing(request: web.Request) -> web.Response:
    rows = await rows_of(request)
    return render(
        request, "requests.html", rows=rows, query=request.query, csv_query=request.query_string
    )


async def export(request: web.Request) -> web.Response:
    """The register as CSV; the export is audited in each tenant it holds."""
    rows = await rows_of(request)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    for tenant in sorted({r["tenant_id"] for r in rows}):
        await audit(
            request,
            tenant,
            "requests_exported",
            None,
            rows=sum(1 for r in rows if r["tenant_id"] == tenant),
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="requests-{stamp}.csv"'},
    )


def _cell(value: Any) -> Any:
    """A spreadsheet must not run a cell as a formula (ids come from upstream systems)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def _request(request: web.Request) -> tuple[str, str, dict[str, Any]]:
    tenant, request_id = request.match_info["tenant"], request.match_info["request_id"]
    tenant_visible(request, tenant)
    async with console_of(request).opened.store.transaction() as tx:
        row = await tx.fetchone(
            f"SELECT {', '.join(COLUMNS)}, regime, subject_ref, outcome FROM dsr_requests"
            " WHERE tenant_id = ? AND request_id = ?",
            (tenant, request_id),
        )
    if row is None:
        raise UnknownSubject("no such request")
    found = dict(zip((*COLUMNS, "regime", "subject_ref", "outcome"), row, strict=True))
    return tenant, request_id, found


async def detail(request: web.Request) -> web.Response:
    tenant, request_id, found = await _request(request)
    console = console_of(request)
    async with console.opened.store.transaction() as tx:
        transitions = await tx.fetchall(
            "SELECT at, from_status, to_status, reason FROM dsr_transitions"
            " WHERE tenant_id = ? AND request_id = ? ORDER BY id",
            (tenant, request_id),
        )
        holds = await tx.fetchall(
            "SELECT hold_group, basis, run_after FROM deferred_erasures"
            " WHERE tenant_id = ? AND request_id = ? ORDER BY hold_group",
            (tenant, request_id),
        )
        notices = await tx.fetchall(
            "SELECT created_at, kind, channel, status, context FROM notification_outbox"
            " WHERE tenant_id = ? AND subject_ref = ? ORDER BY created_at",
            (tenant, found["subject_ref"] or ""),
        )
        pkg = await tx.fetchone(
            "SELECT created_at, expires_at, downloaded_at FROM dsr_packages"
            " WHERE tenant_id = ? AND request_id = ?",
            (tenant, request_id),
        )
        review_row = await tx.fetchone(console_tables.REVIEW_FIND, (tenant, request_id))
        # Per data source (issue 13): what ran, what waits for a source, and why.
        progress = await steps.progress(tx, tenant, request_id)
    sent = [
        {"at": n[0], "kind": n[1], "channel": n[2], "status": n[3]}
        for n in notices
        if json.loads(n[4]).get("request_id") == request_id
    ]
    outcome = json.loads(found["outcome"]) if found["outcome"] else None
    return render(
        request,
        "request.html",
        r=found,
        outcome=json.dumps(outcome, indent=2, default=str) if outcome else None,
        transitions=[
            dict(zip(("at", "from", "to", "reason"), t, strict=True)) for t in transitions
        ],
        holds=[dict(zip(("group", "basis", "run_after"), h, strict=True)) for h in holds],
        steps=progress,
        notices=sent,
        pkg=dict(zip(("created_at", "expires_at", "downloaded_at"), pkg, strict=True))
        if pkg
        else None,
        reviewed=_reviewed(request, tenant),
        review=dict(zip(("state", "by", "at"), review_row, strict=True)) if review_row else None,
    )


def _reviewed(request: web.Request, tenant: str) -> bool:
    return downloads.reviewed(tenant_config.from_settings(console_of(request).settings), tenant)


async def _document(request: web.Request, tenant: str, request_id: str) -> dict[str, Any]:
    opened = console_of(request).opened
    async with opened.store.transaction() as tx:
        row = await tx.fetchone(
            "SELECT path FROM dsr_packages WHERE tenant_id = ? AND request_id = ?",
            (tenant, request_id),
        )
    if row is None:
        raise UnknownSubject("this request has no package")
    zipped = package.unseal(Path(row[0]), opened.keys.export)
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        document: dict[str, Any] = json.loads(archive.read("subject.json"))
    return document


def masked(document: dict[str, Any]) -> dict[str, Any]:
    """The package as a reviewer first sees it: tables, columns and row counts, every value
    of every row masked; the subject's other records (requests, incidents...) likewise."""
    shown = dict(document)
    shown["tables"] = {
        name: {
            **table,
            "rows": [
                {k: MASK if v is not None else None for k, v in row.items()}
                for row in table["rows"]
            ],
        }
        for name, table in document["tables"].items()
    }
    for key in (
        "corrections_requested_but_not_made",
        "restrictions",
        "objections",
        "your_requests",
        "security_incidents",
    ):
        if shown.get(key):
            shown[key] = f"{len(shown[key])} record(s), masked"
    return shown


async def review(request: web.Request) -> web.Response:
    tenant, request_id, found = await _request(request)
    document = await _document(request, tenant, request_id)
    return _review_page(request, found, masked(document), revealed=False)


def _review_page(
    request: web.Request, found: dict[str, Any], document: dict[str, Any], *, revealed: bool
) -> web.Response:
    return render(
        request,
        "package.html",
        r=found,
        document=json.dumps(document, indent=2, default=str, sort_keys=True),
        revealed=revealed,
        reviewed=_reviewed(request, found["tenant_id"]),
    )


async def reveal(request: web.Request) -> web.Response:
    """The package unmasked, for a reason kept in the audit (written before it is shown)."""
    tenant, request_id, found = await _request(request)
    reason = str((await request.post()).get("reason", "")).strip()
    if not reason:
        raise RuleViolation("give a reason to reveal the package (it is audited)")
    document = await _document(request, tenant, request_id)
    await audit(
        request,
        tenant,
        "package_revealed",
        found["subject_ref"],
        request_id,
        request_id=request_id,
        reason=redact_text(reason[:500]),
    )
    return _review_page(request, found, document, revealed=True)


async def approve(request: web.Request) -> web.StreamResponse:
    """Release the package: from now on the subject's code opens it."""
    admin = operator(request)
    tenant, request_id, found = await _request(request)
    opened = console_of(request).opened
    async with opened.store.transaction() as tx:
        exists = await tx.fetchone(
            "SELECT 1 FROM dsr_packages WHERE tenant_id = ? AND request_id = ?",
            (tenant, request_id),
        )
        if exists is None:
            raise UnknownSubject("this request has no package")
        already = await downloads.approved(tx, tenant, request_id)
        if not already:
            await tx.execute(
                console_tables.REVIEW_APPROVE,
                (tenant, request_id, admin.name, datetime.now(UTC).isoformat()),
            )
    if not already:
        await audit(
            request,
            tenant,
            "package_approved",
            found["subject_ref"],
            request_id,
            request_id=request_id,
        )
    raise redirect(f"/requests/{tenant}/{request_id}", "package approved for release")
