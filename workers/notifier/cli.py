"""``privacyops notices list [--failed] [--json] [--tenant T] [--limit N]``.

Shows each notice's state (queued, relayed, sending, retrying, sent, failed),
attempts and failure reason. It shows references, never addresses or bodies.
Exit code 1 when ``--failed`` finds failed notices (so a cron job can alert).
"""

from __future__ import annotations

import argparse
from typing import Any

from infra.cli import EXIT_FAILED, EXIT_OK, App, SubParsers
from infra.store import Store
from workers.notifier import tables

_TABLE = ("created_at", "tenant_id", "notice_id", "kind", "channel", "status", "attempts", "reason")


def register(sub: SubParsers) -> None:
    notices = sub.add_parser("notices", help="notification delivery state")
    notices.add_argument("action", choices=["list"], help="list: notices and their state")
    notices.add_argument("--failed", action="store_true", help="only failed notices")
    notices.add_argument("--json", action="store_true", help="JSON instead of a table")
    notices.add_argument("--tenant", help="only this tenant")
    notices.add_argument("--limit", type=int, default=100, help="at most N (default 100)")
    notices.set_defaults(handler=_list)


def _list(args: argparse.Namespace, app: App) -> int:
    async def read(store: Store) -> list[dict[str, Any]]:
        return await tables.list_notices(
            store, failed=args.failed, tenant_id=args.tenant, limit=args.limit
        )

    rows = app.with_store(read)
    print(tables.as_json(rows) if args.json else table(rows))
    return EXIT_FAILED if args.failed and rows else EXIT_OK


def table(rows: list[dict[str, Any]]) -> str:
    cells = [list(_TABLE)] + [["" if r[c] is None else str(r[c]) for c in _TABLE] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_TABLE))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
