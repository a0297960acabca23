"""``privacyops incidents``: list, show, confirm, contain, close, report.

    privacyops incidents list [--open] [--tenant T] [--json]
    privacyops incidents show ID [--tenant T]
    privacyops incidents confirm ID [--tenant T]
    privacyops incidents contain ID [--tenant T]
    privacyops incidents close ID [--tenant T]
    privacyops incidents report ID [--tenant T] [--sent [--reason TEXT]]

``confirm``, ``contain``, ``close`` and ``report --sent`` are audited admin
actions, actor ``operator:<settings.operator>``. Their events (``incident.updated``,
``incident.compromise``) are committed to the outbox with the change and
published before the command exits; if the broker is down they stay in the
outbox and the next relay start publishes them.

The 72-hour flag of an unsent regulator report is computed at list time
(``due_soon`` within ``security_report_warn_h``, ``overdue`` after), so the list
is right even when no worker runs; the worker's periodic sweep records the
same flag once per state and logs it as an event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from config.settings import Settings
from infra.cli import App, SubParsers
from infra.runtime.audit import report
from infra.store import Store
from messages.errors import BrokerUnavailable
from messages.security import IncidentStatus
from workers.security import admin, rules, tables

EXIT_OK, EXIT_NOTHING = 0, 1

LIST_SQL = (
    "SELECT i.tenant_id, i.incident_id, i.status, i.severity, i.score, i.alert_count,"
    " i.subject_count, i.opened_at, i.compromise, r.due_at, r.sent_at"
    " FROM security_incidents i LEFT JOIN security_reports r"
    " ON r.tenant_id = i.tenant_id AND r.incident_id = i.incident_id"
    " WHERE (CAST(? AS TEXT) IS NULL OR i.tenant_id = ?) AND (? = 0 OR i.status != 'closed')"
    " ORDER BY i.opened_at, i.incident_id"
)
LIST_FIELDS = [
    "tenant_id",
    "incident_id",
    "status",
    "severity",
    "score",
    "alerts",
    "subjects",
    "opened_at",
    "compromise",
    "report_due_at",
    "report_sent_at",
]

ALERT_FIELDS = ["alert_id", "source", "category", "detected_at", "personal_data", "received_at"]


def register(sub: SubParsers) -> None:
    incidents = sub.add_parser("incidents", help="security incidents and regulator reports")
    actions = incidents.add_subparsers(dest="incidents_action", required=True)
    listing = actions.add_parser("list", help="incidents, with the 72-hour report flag")
    listing.add_argument("--open", action="store_true", help="only incidents not closed")
    listing.add_argument("--tenant", help="only this tenant's incidents")
    listing.add_argument("--json", action="store_true", help="print JSON ([] when none)")
    listing.set_defaults(handler=_list)
    for name, handler, text in (
        ("show", _show, "one incident with its timeline"),
        ("confirm", _confirm, "confirm the compromise (audited; notifies subjects)"),
        ("contain", _contain, "mark the incident contained (audited)"),
        ("close", _close, "close the incident (audited; needs the report sent)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("incident_id", help="the incident's id")
        action.add_argument("--tenant", help="the incident's tenant")
        action.set_defaults(handler=handler)
    report = actions.add_parser("report", help="the regulator report as JSON")
    report.add_argument("incident_id", help="the incident's id")
    report.add_argument("--tenant", help="the incident's tenant")
    report.add_argument("--sent", action="store_true", help="record it as sent now (audited)")
    report.add_argument("--reason", help="reasons for a delay past 72 hours (GDPR art 33(1))")
    report.set_defaults(handler=_report)


async def _publish_outbox(app: App, action: str | None = None, incident: Any = None) -> None:
    """Publish what the action committed to the outbox, and report the action on the broker
    for the service's audit log (``admin.action``); if the broker is down, leave both: the
    audit row is in the store already."""
    try:
        async with app.session(broker=True) as opened:
            # the relays read the outbox when they start and drain it when they stop
            if action is not None and incident is not None:
                _, publisher = opened.require_broker()
                await report(
                    publisher,
                    opened.names,
                    incident.tenant_id,
                    action,
                    None,
                    incident.incident_id,
                )
    except BrokerUnavailable:
        print("privacyops: broker unavailable; events stay in the outbox", file=sys.stderr)


def flag_now(due_at: str | None, sent_at: str | None, settings: Settings) -> str | None:
    flag = rules.report_flag(
        datetime.fromisoformat(due_at) if due_at else None,
        datetime.fromisoformat(sent_at) if sent_at else None,
        datetime.now(UTC),
        timedelta(hours=settings.security_report_warn_h),
    )
    return flag.value if flag else None


def _list(args: argparse.Namespace, app: App) -> int:
    async def fetch(store: Store) -> list[dict[str, Any]]:
        async with store.transaction() as tx:
            rows = await tx.fetchall(LIST_SQL, (args.tenant, args.tenant, int(args.open)))
        return [dict(zip(LIST_FIELDS, row, strict=True)) for row in rows]

    rows = app.with_store(fetch)
    for row in rows:
        row["report_flag"] = flag_now(row["report_due_at"], row["report_sent_at"], app.settings)
    if args.json:
        print(json.dumps(rows, indent=2))
    for r in rows if not args.json else []:
        flag = f" REPORT {r['report_flag'].upper()}" if r["report_flag"] else ""
        print(
            f"{r['tenant_id']:<12} {r['incident_id']:<20} {r['status']:<21} {r['severity']:<9}"
            f" {r['score']:>5.2f} alerts {r['alerts']:<6} subjects {r['subjects']:<6}"
            f" opened {r['opened_at'][:19]}{flag}"
        )
    return EXIT_OK  # a query: no incident is an answer


def _show(args: argparse.Namespace, app: App) -> int:
    async def fetch(store: Store) -> dict[str, Any]:
        async with store.transaction() as tx:
            incident = await admin.load(tx, args.incident_id, args.tenant)
            key = (incident.tenant_id, incident.incident_id)
            timeline = await tx.fetchall(
                "SELECT at, change, from_value, to_value, cause FROM security_timeline"
                " WHERE tenant_id = ? AND incident_id = ? ORDER BY id",
                key,
            )
            alerts = await tx.fetchall(
                "SELECT alert_id, source, category, detected_at, personal_data, received_at"
                " FROM security_alerts WHERE tenant_id = ? AND incident_id = ?"
                " ORDER BY detected_at LIMIT 100",
                key,
            )
            locked = await tx.fetchall(
                "SELECT account_id FROM security_incident_accounts"
                " WHERE tenant_id = ? AND incident_id = ? ORDER BY account_id",
                key,
            )
            report = await admin.report_of(tx, incident)
        columns = [c.strip() for c in tables.INCIDENT_COLUMNS.split(",")]
        shown = dict(zip(columns, tables.incident_row(incident), strict=True))
        shown.pop("unauthorised_party")  # free text: in the report, not in the overview
        shown["report_due_at"] = report["due_at"] if report else None
        shown["report_flag"] = (
            flag_now(report["due_at"], report["report_date"], app.settings) if report else None
        )
        shown["accounts_locked"] = [r[0] for r in locked]
        shown["alerts"] = [dict(zip(ALERT_FIELDS, a, strict=True)) for a in alerts]
        shown["timeline"] = [
            dict(zip(["at", "change", "from", "to", "cause"], t, strict=True)) for t in timeline
        ]
        return shown

    print(json.dumps(app.with_store(fetch), indent=2, default=str))
    return EXIT_OK


def _admin(
    app: App, action: Callable[[Store, datetime], Awaitable[Any]], name: str | None = None
) -> Any:
    async def run() -> Any:
        async with app.session() as opened:
            result = await action(opened.store, datetime.now(UTC))
        await _publish_outbox(app, name, result)
        return result

    return asyncio.run(run())


def _confirm(args: argparse.Namespace, app: App) -> int:
    incident = _admin(
        app,
        lambda store, now: admin.confirm(
            store, None, args.incident_id, app.settings.operator, now, args.tenant
        ),
        "incident_confirmed",
    )
    print(f"{incident.incident_id}: compromise confirmed, report due {incident.report_due_at}")
    return EXIT_OK


def _status(args: argparse.Namespace, app: App, status: IncidentStatus) -> int:
    incident = _admin(
        app,
        lambda store, now: admin.set_status(
            store, None, args.incident_id, status, app.settings.operator, now, args.tenant
        ),
        f"incident_{status.value}",
    )
    print(f"{incident.incident_id}: {incident.status.value}")
    return EXIT_OK


def _contain(args: argparse.Namespace, app: App) -> int:
    return _status(args, app, IncidentStatus.CONTAINED)


def _close(args: argparse.Namespace, app: App) -> int:
    return _status(args, app, IncidentStatus.CLOSED)


def _report(args: argparse.Namespace, app: App) -> int:
    async def fetch(store: Store) -> dict[str, Any] | None:
        if args.sent:
            return await admin.mark_report_sent(
                store,
                args.incident_id,
                app.settings.operator,
                datetime.now(UTC),
                args.reason,
                args.tenant,
            )
        async with store.transaction() as tx:
            incident = await admin.load(tx, args.incident_id, args.tenant)
            return await admin.report_of(tx, incident)

    report = app.with_store(fetch)
    if report is None:
        print("privacyops: no regulator report: no compromise was recorded", file=sys.stderr)
        return EXIT_NOTHING
    report["flag"] = flag_now(report["due_at"], report["report_date"], app.settings)
    print(json.dumps(report, indent=2))
    return EXIT_OK
