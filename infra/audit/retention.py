"""Pruning the audit trail without losing its proof (``privacyops audit prune``).

Audit rows are kept ``audit_years`` (config/retention.toml), then go in whole
segments: the rows up to the newest signed checkpoint whose rows are all past
retention. The head remembers where the kept chain now starts (``base_seq``,
``base_hash``: that checkpoint's), so ``verify`` checks the first kept row against a
signed hash instead of the genesis, and a third party holding the published
checkpoint can still check every kept row. A chain that does not verify is never
pruned: pruning must not hide a break. Rows written before the chain existed are
pruned by age alone.

Why: POPIA s14(1) (records not kept longer than needed), s14(4) (destroyed so they
cannot be reconstructed), while s19 (integrity) still holds for what is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from config.datamap import add_years, load_retention
from config.settings import Settings
from infra.audit.chain import HEAD_LOCK
from infra.audit.checkpoints import stored, tenants
from infra.audit.proof import GENESIS
from infra.audit.tables import (
    MOVE_BASE,
    PRUNE_CHECKPOINTS,
    PRUNE_ROWS,
    PRUNE_UNCHAINED,
)
from infra.audit.verify import verify_tenant
from infra.store import Store
from messages.errors import RuleViolation

LAST_OLD_SEQ = (
    "SELECT max(seq) FROM audit_log WHERE tenant_id = ? AND seq IS NOT NULL AND recorded_at < ?"
)


@dataclass(frozen=True)
class Pruned:
    tenant_id: str
    seq: int
    rows: int


def audit_years(settings: Settings) -> int:
    return load_retention(settings.retention_path).audit_years


def cutoff(now: datetime, years: int) -> str:
    moment = now.astimezone(UTC)
    day = add_years(moment.date(), -years)
    return moment.replace(year=day.year, month=day.month, day=day.day).isoformat()


async def prune(
    store: Store,
    keys: Mapping[str, bytes],
    years: int,
    tenant_id: str | None = None,
    now: datetime | None = None,
) -> list[Pruned]:
    """Prune every tenant (or one); what went, per tenant that lost rows."""
    before = cutoff(now or datetime.now(UTC), years)
    done = []
    for tenant in [tenant_id] if tenant_id else await tenants(store):
        pruned = await prune_tenant(store, keys, tenant, before)
        if pruned is not None:
            done.append(pruned)
    return done


async def prune_tenant(
    store: Store, keys: Mapping[str, bytes], tenant_id: str, before: str
) -> Pruned | None:
    report = await verify_tenant(store, tenant_id, keys)
    if report.broken is not None:
        raise RuleViolation(
            f"tenant {tenant_id}: the audit chain is broken at row id {report.broken.id};"
            " not pruned (privacyops audit verify)"
        )
    async with store.transaction() as tx:
        await tx.fetchone(HEAD_LOCK, (tenant_id, GENESIS, datetime.now(UTC).isoformat()))
        old = await tx.fetchone(LAST_OLD_SEQ, (tenant_id, before))
        last_old = int(old[0]) if old is not None and old[0] is not None else 0
        behind = [c for c in await stored(tx, tenant_id) if report.base_seq < c.seq <= last_old]
        unchained = await tx.execute(PRUNE_UNCHAINED, (tenant_id, before))
        if not behind:
            return Pruned(tenant_id, report.base_seq, unchained) if unchained else None
        base = behind[-1]
        rows = await tx.execute(PRUNE_ROWS, (tenant_id, base.seq))
        await tx.execute(MOVE_BASE, (base.seq, base.row_hash, tenant_id))
        await tx.execute(PRUNE_CHECKPOINTS, (tenant_id, base.seq))
    return Pruned(tenant_id, base.seq, rows + unchained)
