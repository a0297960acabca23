"""Each notice's delivery state, keyed by notice_id: the exactly-once ledger.

    queued -> relayed -> sending -> sent
                            |  ^ '-> failed      (permanent; or retries exhausted)
                            v  |
                          retrying               (provider unavailable, retry pending)

``notification_outbox.status`` (the runtime's table, ``set_notice_status``)
mirrors the life-cycle for queries; ``notice_deliveries`` keeps the details
(attempts, reason, provider reference, lease). A claim (``sending``) carries a
lease of one handler timeout: a second copy of the notice arriving while the
first is being sent finds the claim live
and is retried later instead of sending in parallel; after a crash the lease
lapses and the notice may be claimed again. ``sent`` is final: a notice in that
state is never sent again, whatever the broker redelivers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from infra.runtime.tables import clear_sealed, notice_queued, set_notice_status
from infra.runtime.worker import Effects
from infra.store import Store, Transaction
from infra.store.migrations import Migration, Schema, portable

BASELINE = """
CREATE TABLE IF NOT EXISTS notice_deliveries (
    notice_id    TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('sending', 'retrying', 'sent', 'failed')),
    channel      TEXT,
    transport    TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    reason       TEXT,
    detail       TEXT,
    provider_ref TEXT,
    lease_until  TEXT,
    updated_at   TEXT NOT NULL,
    sent_at      TEXT
) WITHOUT ROWID;
"""


NOTIFIER = Schema("notifier", (Migration(1, "notice deliveries", portable(BASELINE)),))


class Claim(StrEnum):
    CLAIMED = "claimed"
    ALREADY_SENT = "already_sent"
    BUSY = "busy"
    UNKNOWN = "unknown"


CLAIM_UPSERT = (
    "INSERT INTO notice_deliveries (notice_id, tenant_id, status, attempts, lease_until,"
    " updated_at) VALUES (?, ?, 'sending', 1, ?, ?) ON CONFLICT (notice_id) DO UPDATE SET"
    " status = 'sending', attempts = notice_deliveries.attempts + 1,"
    " lease_until = excluded.lease_until, reason = NULL, detail = NULL,"
    " updated_at = excluded.updated_at"
)
MARK = (
    "UPDATE notice_deliveries SET status = ?, reason = ?, detail = ?,"
    " channel = coalesce(?, channel), transport = coalesce(?, transport),"
    " provider_ref = coalesce(?, provider_ref),"
    " sent_at = ?, lease_until = NULL, updated_at = ? WHERE tenant_id = ? AND notice_id = ?"
)


async def claim(
    store: Store, tenant_id: str, notice_id: str, now: datetime, lease_s: float
) -> Claim:
    """Take the notice for sending, unless it was sent or another copy is being sent."""
    async with store.transaction() as tx:
        await tx.lock(f"notifier:notice:{tenant_id}:{notice_id}")  # two processes, one claim
        if not await notice_queued(tx, tenant_id, notice_id):
            return Claim.UNKNOWN
        row = await tx.fetchone(
            "SELECT status, lease_until FROM notice_deliveries WHERE tenant_id = ?"
            " AND notice_id = ?",
            (tenant_id, notice_id),
        )
        if row and row[0] == "sent":
            return Claim.ALREADY_SENT
        if row and row[0] == "sending" and row[1] and row[1] > now.isoformat():
            return Claim.BUSY
        lease = (now + timedelta(seconds=lease_s)).isoformat()
        tx.stage(CLAIM_UPSERT, (notice_id, tenant_id, lease, now.isoformat()))
        set_notice_status(tx, tenant_id, notice_id, "sending")
    return Claim.CLAIMED


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str | None = None
    detail: str | None = None
    channel: str | None = None
    transport: str | None = None
    provider_ref: str | None = None


def stage_outcome(
    tx: Transaction, tenant_id: str, notice_id: str, outcome: Outcome, now: datetime
) -> None:
    sent_at = now.isoformat() if outcome.status == "sent" else None
    tx.stage(
        MARK,
        (
            outcome.status,
            outcome.reason,
            outcome.detail,
            outcome.channel,
            outcome.transport,
            outcome.provider_ref,
            sent_at,
            now.isoformat(),
            tenant_id,
            notice_id,
        ),
    )
    set_notice_status(tx, tenant_id, notice_id, outcome.status)
    if outcome.status == "sent":
        clear_sealed(tx, tenant_id, notice_id)  # the secrets reached the subject: drop them


async def record(store: Store, effects: Effects, notice_id: str, outcome: Outcome) -> None:
    """Commit an outcome now, in its own transaction, with the effects' audit rows."""
    async with store.transaction() as tx:
        stage_outcome(tx, effects.tenant_id, notice_id, outcome, effects.now)
        tx.stage_all(effects.writes)


LIST = (
    "SELECT o.created_at, o.tenant_id, o.notice_id, o.subject_ref, o.kind,"
    " coalesce(d.channel, o.channel), o.status, coalesce(d.attempts, 0),"
    " coalesce(d.reason, o.reason), d.detail,"
    " d.transport, d.sent_at FROM notification_outbox o"
    " LEFT JOIN notice_deliveries d ON d.notice_id = o.notice_id"
)
COLUMNS = (
    "created_at",
    "tenant_id",
    "notice_id",
    "subject_ref",
    "kind",
    "channel",
    "status",
    "attempts",
    "reason",
    "detail",
    "transport",
    "sent_at",
)


async def list_notices(
    store: Store, *, failed: bool = False, tenant_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Newest first; the rows hold references and states, never addresses."""
    where, params = [], []
    if failed:
        where.append("o.status = 'failed'")
    if tenant_id:
        where.append("o.tenant_id = ?")
        params.append(tenant_id)
    sql = LIST + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY o.created_at DESC, o.notice_id LIMIT ?"
    async with store.transaction() as tx:
        rows = await tx.fetchall(sql, (*params, limit))
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, sort_keys=True)
