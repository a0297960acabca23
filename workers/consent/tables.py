"""The consent worker's tables, their statements and the contactability queries.

``consent_state`` holds the current status per (tenant, subject, channel,
purpose): a consent to one purpose is never consent to another (docs/rules.md
"Direct-marketing consent"); ``consent_history`` every event received, applied
or not: the evidence (GDPR art 7(1)), kept for 3 years after an opt-out (NCR
reg 58(4)).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from infra.store import Store, Transaction
from infra.store.migrations import Migration, Schema, portable
from messages.consent import Channel, ConsentStatus, is_marketing
from workers.consent.rules import Current, contactable
from workers.platform.optouts import barriers, never_ask, still_dated
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

#: State per channel AND purpose (a grant for one purpose never overwrites another's
#: withdrawal), and a third status: refused when asked (POPIA s69(2)(a)).
STATE_PER_PURPOSE = """
CREATE TABLE consent_state_v2 (
    tenant_id    TEXT NOT NULL,
    subject_ref  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn', 'refused')),
    effective_at TEXT NOT NULL,
    source       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref, channel, purpose)
) WITHOUT ROWID;
INSERT INTO consent_state_v2 (tenant_id, subject_ref, channel, purpose, status, effective_at,
    source, message_id, updated_at)
    SELECT tenant_id, subject_ref, channel, purpose, status, effective_at, source, message_id,
        updated_at FROM consent_state;
DROP TABLE consent_state;
ALTER TABLE consent_state_v2 RENAME TO consent_state;
DROP INDEX IF EXISTS consent_history_subject;
CREATE INDEX consent_history_subject
    ON consent_history (tenant_id, subject_ref, channel, purpose);
"""

CONSENT = Schema(
    "consent",
    (
        Migration(1, "consent state and history", portable(BASELINE)),
        Migration(2, "state per channel and purpose; refusals", portable(STATE_PER_PURPOSE)),
    ),
)

HISTORY_INSERT = (
    "INSERT INTO consent_history (tenant_id, subject_ref, channel, purpose, status, source,"
    " evidence, occurred_at, message_id, outcome, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
STATE_UPSERT = (
    "INSERT INTO consent_state (tenant_id, subject_ref, channel, purpose, status, effective_at,"
    " source, message_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, subject_ref, channel, purpose) DO UPDATE SET"
    " status = excluded.status, effective_at = excluded.effective_at, source = excluded.source,"
    " message_id = excluded.message_id, updated_at = excluded.updated_at"
)
_KEYS_PER_QUERY = 200

Key = tuple[str, str, str, str]  # tenant, subject_ref, channel, purpose


async def current_states(tx: Transaction, keys: Sequence[Key]) -> dict[Key, Current]:
    """The current state of each (tenant, subject, channel, purpose), 200 keys per query.

    Each key is locked first, for the rest of the transaction: a process that applies a
    change to the same channel and purpose meanwhile waits, so newest-wins is decided on
    what is really current whatever the order the processes run in.
    """
    found: dict[Key, Current] = {}
    ordered = sorted(set(keys))
    await tx.lock(*(f"consent:{t}:{s}:{c}:{p}" for t, s, c, p in ordered))
    for start in range(0, len(ordered), _KEYS_PER_QUERY):
        chunk = ordered[start : start + _KEYS_PER_QUERY]
        values = ", ".join("(?, ?, ?, ?)" for _ in chunk)
        rows = await tx.fetchall(
            f"WITH k(t, s, c, p) AS (VALUES {values}) "
            "SELECT cs.tenant_id, cs.subject_ref, cs.channel, cs.purpose, cs.status,"
            " cs.effective_at FROM consent_state cs JOIN k ON cs.tenant_id = k.t"
            " AND cs.subject_ref = k.s AND cs.channel = k.c AND cs.purpose = k.p",
            [part for key in chunk for part in key],
        )
        for tenant, subject, channel, purpose, status, effective_at in rows:
            found[(tenant, subject, channel, purpose)] = Current(
                ConsentStatus(status), datetime.fromisoformat(effective_at)
            )
    return found


async def is_contactable(
    store: Store,
    tenant_id: str,
    subject_ref: str,
    channel: Channel | str,
    purpose: str,
    *,
    digest_key: bytes,
) -> bool:
    """May this tenant contact this subject on this channel for this purpose now?

    Only a recorded, current grant for exactly this channel and purpose allows
    contact (POPIA s69(1); a grant for another purpose never counts), and only if it
    is newer than every barrier: a suppressed opt-out of an erased subject (NCR reg
    58(4)) or an objection covering the purpose (POPIA s11(3)). A restriction of the
    subject's processing also means no (POPIA s14(6): restricted data is storage-only).
    """
    key = (tenant_id, subject_ref, Channel(channel).value, purpose)
    async with store.transaction() as tx:
        scopes = await restricted_scopes(tx, tenant_id, subject_ref)
        if scopes & {ALL, "consent", "contact", "contact_points"}:
            return False
        current = (await current_states(tx, [key])).get(key)
        if current is None or current.status is not ConsentStatus.GRANTED:
            return False
        barrier = (await barriers(tx, digest_key, [key], still_dated())).get(key)
    return contactable(current, barrier)


async def may_ask(store: Store, tenant_id: str, subject_ref: str, *, digest_key: bytes) -> bool:
    """May the tenant ask this person for marketing consent (POPIA s69(2)(a))?

    Not when they refused when asked before: a ``refused`` in the history, on any
    channel and for any marketing purpose, or kept in a suppression entry after the
    history was erased. A withdrawal is not a refusal: it answers "may I market?",
    not "may I ask?".
    """
    async with store.transaction() as tx:
        if await refused_marketing(tx, tenant_id, subject_ref):
            return False
        return not await never_ask(tx, digest_key, tenant_id, subject_ref, still_dated())


async def refused_marketing(tx: Transaction, tenant_id: str, subject_ref: str) -> bool:
    """Whether the history holds a refusal when asked for a marketing purpose (POPIA
    s69(2)(a)); the erasure keeps it as "never ask" before the history goes."""
    rows = await tx.fetchall(
        "SELECT DISTINCT purpose FROM consent_history WHERE tenant_id = ?"
        " AND subject_ref = ? AND status = 'refused'",
        (tenant_id, subject_ref),
    )
    return any(is_marketing(str(purpose)) for (purpose,) in rows)
