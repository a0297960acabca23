"""Helpers of the audit tests: append rows, read the chain back, tamper with it by hand."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from infra.runtime.worker import Effects, commit_effects
from infra.store import Store
from tests.support.db import connect, sql


async def append(
    store: Store,
    tenant: str,
    n: int,
    subject: str = "debtor-1",
    *,
    per_tx: int = 1,
    now: datetime | None = None,
) -> None:
    """``n`` audit rows for ``tenant``, ``per_tx`` to a transaction, as effects write them."""
    for start in range(0, n, per_tx):
        effects = Effects.standalone("test", tenant, now=now)
        for i in range(start, min(n, start + per_tx)):
            effects.audit("thing_done", subject, n=i)
        await commit_effects(store, None, effects)


def ids(db: Path, tenant: str) -> dict[int, int]:
    """seq -> id of the tenant's chained rows."""
    rows = sql(db, "SELECT seq, id FROM audit_log WHERE tenant_id = ? AND seq IS NOT NULL", tenant)
    return {int(seq): int(row_id) for seq, row_id in rows}


def execute(db: Path, statement: str, *params: Any) -> None:
    with connect(db) as conn:
        conn.execute(statement, params)


def row(db: Path, row_id: int) -> dict[str, Any]:
    with connect(db, dict_rows=True) as conn:
        found = conn.execute("SELECT * FROM audit_log WHERE id = ?", (row_id,)).fetchone()
    return dict(found)
