"""CLI for data-subject requests: ``dsr list|show|package``, ``holds sweep``, ``datamap check``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from config import tenants as tenant_config
from config.datamap import load_datamap
from config.secrets import write_private
from infra.cli import App, SubParsers
from infra.sources import Sources
from infra.store import Store
from workers.dsr import downloads, mapcheck, steps
from workers.dsr.handlers import DsrWorker
from workers.dsr.rules import deadline_state, local_date
from workers.dsr.sweeps import SweepReport, run_all


def register(sub: SubParsers) -> None:
    dsr = sub.add_parser("dsr", help="data-subject requests").add_subparsers(
        dest="dsr_action", required=True
    )
    listing = dsr.add_parser("list", help="requests with status and due date")
    listing.add_argument("--overdue", action="store_true", help="only due within 7 days or late")
    listing.add_argument("--tenant", help="only this tenant's requests")
    listing.add_argument("--json", action="store_true", help="print JSON ([] when none)")
    listing.set_defaults(handler=_list)
    show = dsr.add_parser("show", help="one request with its transitions")
    show.add_argument("request_id", help="the request's id")
    show.add_argument("--tenant", help="the request's tenant (ids may repeat across tenants)")
    show.add_argument("--json", action="store_true", help="print JSON (the only format)")
    show.set_defaults(handler=_show)
    pkg = dsr.add_parser(
        "package", help="decrypt an access package; the download code is read from stdin"
    )
    pkg.add_argument("tenant", help="the tenant the code was issued by")
    pkg.add_argument("--out", type=Path, required=True, help="a new file (created 0600)")
    pkg.set_defaults(handler=_package)
    holds = sub.add_parser("holds", help="retention holds")
    holds.add_argument(
        "action", choices=["sweep"], help="sweep: deadlines, deferred erasures, lifts, once"
    )
    holds.add_argument("--json", action="store_true", help="print the summary as JSON")
    holds.set_defaults(handler=_sweep)
    datamap = sub.add_parser("datamap", help="the data map against the live data sources")
    datamap.add_argument(
        "action",
        choices=["check"],
        help="check: tables and columns exist in each source, every column is classified, "
        "personal-looking columns not in the map are reported (exit 1 on any problem)",
    )
    datamap.add_argument("--json", action="store_true", help="print the problems as JSON")
    datamap.set_defaults(handler=_datamap_check)


def _datamap_check(args: argparse.Namespace, app: App) -> int:
    """Exit 0 when the map fits every source, 1 with each problem listed (``mapcheck``)."""
    datamap = load_datamap(app.settings.datamap_path)

    async def run(store: Store) -> list[mapcheck.Problem]:
        sources = Sources(app.settings, store)
        try:
            return await mapcheck.check(sources, datamap)
        finally:
            await sources.close()

    problems = app.with_store(run)
    if args.json:
        print(json.dumps(mapcheck.as_json(problems, datamap.sources()), indent=2))
    else:
        for p in problems:
            where = f"{p.source}: {p.table}" + (f".{p.column}" if p.column else "")
            print(f"{where}: {p.problem}")
        tables = len(datamap.tables)
        print(f"{'ok' if not problems else 'FAILED'}: {tables} tables in {datamap.sources()}")
    return 0 if not problems else 1


LIST_SQL = (
    "SELECT tenant_id, request_id, kind, status, received_at, due_on, extended, deadline_flag"
    " FROM dsr_requests WHERE (CAST(? AS TEXT) IS NULL OR tenant_id = ?)"
    " ORDER BY due_on, request_id"
)
FIELDS = [
    "tenant_id",
    "request_id",
    "kind",
    "status",
    "received_at",
    "due_on",
    "extended",
    "deadline",
]


def _list(args: argparse.Namespace, app: App) -> int:
    async def fetch(store: Store) -> list[dict[str, Any]]:
        async with store.transaction() as tx:
            rows = await tx.fetchall(LIST_SQL, (args.tenant, args.tenant))
        return [dict(zip(FIELDS, row, strict=True)) for row in rows]

    now = datetime.now(UTC)
    directory = tenant_config.from_settings(app.settings)
    rows = app.with_store(fetch)
    for row in rows:
        final = row["status"] in ("completed", "partially_completed", "refused")
        zone = directory.zone(row["tenant_id"], app.settings.timezone)
        row["deadline"] = (
            None
            if final
            else deadline_state(date.fromisoformat(row["due_on"]), local_date(now, zone))
        )
    if args.overdue:
        rows = [r for r in rows if r["deadline"]]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['tenant_id']:<12} {r['request_id']:<20} {r['kind']:<14} {r['status']:<22}"
                f" due {r['due_on']} {r['deadline'] or ''}"
            )
    return 0  # a query: an empty register is an answer (print [] with --json)


def _show(args: argparse.Namespace, app: App) -> int:
    async def fetch(store: Store) -> dict[str, Any] | None:
        async with store.transaction() as tx:
            row = await tx.fetchone(
                "SELECT tenant_id, request_id, kind, regime, subject_ref, status, received_at,"
                " due_on, extended, outcome, verified_by, verification_method, verified_at"
                " FROM dsr_requests WHERE request_id = ?"
                " AND (CAST(? AS TEXT) IS NULL OR tenant_id = ?)",
                (args.request_id, args.tenant, args.tenant),
            )
            if row is None:
                return None
            history = await tx.fetchall(
                "SELECT at, from_status, to_status, reason FROM dsr_transitions"
                " WHERE tenant_id = ? AND request_id = ? ORDER BY id",
                (row[0], row[1]),
            )
        keys = [
            "tenant_id",
            "request_id",
            "kind",
            "regime",
            "subject_ref",
            "status",
            "received_at",
            "due_on",
            "extended",
            "outcome",
            "verified_by",
            "verification_method",
            "verified_at",
        ]
        shown = dict(zip(keys, row, strict=True))
        shown["outcome"] = json.loads(shown["outcome"]) if shown["outcome"] else None
        shown["transitions"] = [
            dict(zip(["at", "from", "to", "reason"], h, strict=True)) for h in history
        ]
        async with store.transaction() as tx:  # per data source: what ran, what waits, why
            shown["steps"] = await steps.progress(tx, str(row[0]), str(row[1]))
        return shown

    shown = app.with_store(fetch)
    if shown is None:
        print(f"privacyops: no request {args.request_id}", file=sys.stderr)
        return 1
    print(json.dumps(shown, indent=2, default=str))
    return 0


def _package(args: argparse.Namespace, app: App) -> int:
    """Decrypt a package for its download code (issue 11, D11).

    The code is read from standard input (an argument would show in ``ps`` and the shell
    history); it works once: the package is claimed (``downloaded_at``) in the same
    transaction that finds it, so a second use is refused. The output file is created
    0600 with ``O_EXCL`` (never overwrites). The operator (the broker user) is audited
    in the store and reported on the broker before anything is decrypted.
    """
    code = sys.stdin.readline().strip()
    if not code:
        raise ValueError("give the download code on standard input")
    if args.out.exists():
        raise ValueError(f"{args.out} exists; write to a new file")
    reviewed = downloads.reviewed(tenant_config.from_settings(app.settings), args.tenant)

    async def claim() -> downloads.Handed:
        async with app.session(broker=True) as opened:
            actor = f"operator:{app.settings.operator}"
            return await downloads.claim(
                opened, args.tenant, code, actor, datetime.now(UTC), reviewed=reviewed
            )

    handed = asyncio.run(claim())
    write_private(args.out, handed.zipped)
    print(f"wrote {args.out} (request {handed.request_id})")
    return 0


def _sweep(args: argparse.Namespace, app: App) -> int:
    """One sweep now (for cron); events it records are published before it exits."""
    worker = DsrWorker(app.settings)

    async def sweep() -> SweepReport:
        async with app.session(broker=True) as opened:
            try:
                return await run_all(worker, opened.store, opened.outboxes, datetime.now(UTC))
            finally:
                await worker.close()

    report = asyncio.run(sweep())
    if args.json:
        print(json.dumps(dataclasses.asdict(report)))
        return 0
    print(
        f"flagged {report.flagged} request(s), ran {report.erasures_run} deferred "
        f"erasure(s), lifted {report.lifted} restriction(s)"
    )
    return 0
