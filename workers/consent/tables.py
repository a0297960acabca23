"""The consent worker's tables, their statements and the contactability query.

``consent_state`` holds the current status per (tenant, subject, channel);
``consent_history`` every event received, applied or not: the evidence (GDPR
art 7(1)), kept for 3 years after an opt-out (NCR reg 58(4)).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from infra.store import Store, Transaction
from infra.store.migrations import Migration, Schema, portable
from messages.consent import Channel, ConsentStatus
from workers.consent.rules import Current
from workers.platform.tables import ALL, restricted_scopes

BASELINE = """
CREATE TABLE IF NOT EXISTS consent_state (
    tenant_id    TEXT NOT NULL,
    subject_ref  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn')),
    effective_at TEXT NOT NULL,
    source       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref, channel)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS consent_history (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    channel     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_history_subject
    ON consent_history (tenant_id, subject_ref, channel);
"""

CONSENT = Schema("consent", (Migration(1, "consent state and history", portable(BASELINE)),))

HISTORY_INSERT = (
    "INSERT INTO consent_history (tenant_id, subject_ref, channel, purpose, status, source,"
    " evidence, occurred_at, message_id, outcome, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
STATE_UPSERT = (
    "INSERT INTO consent_state (tenant_id, subject_ref, channel, purpose, status, effective_at,"
    " source, message_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, subject_ref, channel) DO UPDATE SET purpose = excluded.purpose,"
    " status = excluded.status, effective_at = excluded.effective_at, source = excluded.source,"
    " message_id = excluded.message_id, updated_at = excluded.updated_at"
)
_KEYS_PER_QUERY = 300

Key = tuple[str, str, str]


async def current_states(tx: Transaction, keys: Sequence[Key]) -> dict[Key, Current]:
    """The current state of each (tenant, subject, channel), in one query per 300 keys.

    Each key is locked first, for the rest of the transaction: a process that applies a
    change to the same channel meanwhile waits, so newest-wins is decided on what is
    really current whatever the order the processes run in.
    """
    found: dict[Key, Current] = {}
    ordered = sorted(set(keys))
    await tx.lock(*(f"consent:{t}:{s}:{c}" for t, s, c in ordered))
    for start in range(0, len(ordered), _KEYS_PER_QUERY):
        chunk = ordered[start : start + _KEYS_PER_QUERY]
        values = ", ".join("(?, ?, ?)" for _ in chunk)
        rows = await tx.fetchall(
            f"WITH k(t, s, c) AS (VALUES {values}) "
            "SELECT cs.tenant_id, cs.subject_ref, cs.channel, cs.status, cs.effective_at "
            "FROM consent_state cs JOIN k ON cs.tenant_id = k.t AND cs.subject_ref = k.s "
            "AND cs.channel = k.c",
            [part for key in chunk for part in key],
        )
        for tenant, subject, channel, status, effective_at in rows:
            found[(tenant, subject, channel)] = Current(
                ConsentStatus(status), datetime.fromisoformat(effective_at)
            )
    return found


async def is_contactable(
    store: Store, tenant_id: str, subject_ref: str, channel: Channel | str
) -> bool:
    """Suppression check: may this tenant market to this subject on this channel now?

    Only a recorded, current grant allows contact (POPIA s69(1)); no record or a
    withdrawal means no, and so does a restriction of the subject's processing
    (POPIA s14(6): restricted data is storage-only).
    """
    async with store.transaction() as tx:
        if await restricted_scopes(tx, tenant_id, subject_ref) & {ALL, "consent", "contact"}:
            return False
        row = await tx.fetchone(
            "SELECT status FROM consent_state WHERE tenant_id = ? AND subject_ref = ?"
            " AND channel = ?",
            (tenant_id, subject_ref, Channel(channel).value),
        )
    return row is not None and row[0] == ConsentStatus.GRANTED.value
