"""The runtime's own tables: the inbox, the audit log and the two outboxes.

* ``inbox``: one row per message a worker applied (worker, tenant, message_id):
  a redelivery finds its row and is skipped, so effects happen once;
* ``audit_log``: one row per effect, written in the effect's transaction;
* ``event_outbox``: downstream events, published by the outbox relay after commit;
* ``notification_outbox``: notices for subjects, published as ``notice.send`` by
  the same relay; ``status`` is queued, relayed, or failed (``reason`` says why)
  on the way to the worker that sends them, which records the rest of the
  delivery (sending, sent...) with ``set_notice_status``. Its ``sealed`` column
  holds the notice's secrets (a download code, an address fixed when the notice
  was queued) encrypted with the notice key (``infra.keys``); only the worker
  that sends the notice opens it, from this row (``load_notice``), and
  ``clear_sealed`` drops it in the transaction that records ``sent``.

Every statement on these tables lives here, so the tables have one owner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infra.audit import chain
from infra.store.base import Transaction
from infra.store.migrations import Migration, Schema, portable

BASELINE = """
CREATE TABLE IF NOT EXISTS inbox (
    worker       TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    type         TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (worker, tenant_id, message_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_log (
    id             INTEGER PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    subject_ref    TEXT,
    message_id     TEXT,
    correlation_id TEXT,
    attempt        INTEGER,
    details        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS event_outbox (
    message_id   TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    body         BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX IF NOT EXISTS event_outbox_pending ON event_outbox (created_at)
    WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS notification_outbox (
    notice_id        TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    subject_ref      TEXT NOT NULL,
    kind             TEXT NOT NULL,
    channel          TEXT,
    context          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'queued',
    cause_message_id TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_outbox_subject
    ON notification_outbox (tenant_id, subject_ref);
CREATE INDEX IF NOT EXISTS notification_outbox_status ON notification_outbox (status);
"""

RUNTIME = Schema(
    "runtime",
    (
        Migration(1, "inbox, audit log and outboxes", portable(BASELINE)),
        Migration(
            2,
            "notice outbox: why a notice could not be relayed",
            portable("ALTER TABLE notification_outbox ADD COLUMN reason TEXT;"),
        ),
        Migration(
            3,
            "notice outbox: sealed (encrypted) context, cleared once the notice is sent",
            portable("ALTER TABLE notification_outbox ADD COLUMN sealed TEXT;"),
        ),
        Migration(
            4,
            "audit log: find an admin action reported twice (store and broker)",
            portable(
                "CREATE INDEX IF NOT EXISTS audit_log_correlation"
                " ON audit_log (tenant_id, correlation_id);"
            ),
        ),
        Migration(
            5,
            "inbox and published events pruned after their retention: indexes by age",
            portable(
                "CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (processed_at);\n"
                "CREATE INDEX IF NOT EXISTS event_outbox_published ON event_outbox"
                " (published_at) WHERE published_at IS NOT NULL;"
            ),
        ),
    ),
)

INBOX_SEEN = "SELECT message_id FROM inbox WHERE worker = ? AND tenant_id = ? AND message_id IN "
INBOX_INSERT = (
    "INSERT INTO inbox (worker, tenant_id, message_id, type, processed_at) VALUES (?, ?, ?, ?, ?)"
)
#: Staged by ``Effects.audit``; the store links each row into its tenant's chain.
AUDIT_INSERT = chain.AUDIT_INSERT
AUDIT_REPORTED = "SELECT 1 FROM audit_log WHERE tenant_id = ? AND correlation_id = ? LIMIT 1"
EVENT_INSERT = (
    "INSERT INTO event_outbox (message_id, tenant_id, routing_key, body, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
EVENTS_WAITING = (
    "SELECT message_id, tenant_id, routing_key, body FROM event_outbox"
    " WHERE published_at IS NULL ORDER BY created_at LIMIT ?"
)
#: Retention (``inbox_retention_days``): an inbox row only has to outlive every
#: redelivery of its message; a published event row is history once confirmed.
INBOX_PRUNE = "DELETE FROM inbox WHERE processed_at < ?"
EVENTS_PRUNE = "DELETE FROM event_outbox WHERE published_at IS NOT NULL AND published_at < ?"
EVENT_PUBLISHED = "UPDATE event_outbox SET published_at = ? WHERE tenant_id = ? AND message_id = ?"
NOTICE_INSERT = (
    "INSERT INTO notification_outbox (notice_id, tenant_id, subject_ref, kind, channel,"
    " context, cause_message_id, created_at, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
NOTICES_WAITING = (
    "SELECT notice_id, tenant_id, subject_ref, kind, channel, context, cause_message_id,"
    " created_at FROM notification_outbox WHERE status = 'queued' ORDER BY created_at LIMIT ?"
)
#: ``AND status = 'queued'``: a notice already taken further (sending, sent) by a fast
#: sender is never set back to ``relayed``.
NOTICE_RELAYED = (
    "UPDATE notification_outbox SET status = ?, reason = ? WHERE tenant_id = ?"
    " AND notice_id = ? AND status = 'queued'"
)
NOTICE_STATUS = "UPDATE notification_outbox SET status = ? WHERE tenant_id = ? AND notice_id = ?"
NOTICE_KNOWN = "SELECT 1 FROM notification_outbox WHERE tenant_id = ? AND notice_id = ?"
#: Erasure (workers/dsr/forget.py): a subject's notices, and reducing a delivered one to what
#: the audit needs. A notice still on its way keeps its context until it is sent or failed.
NOTICES_OF_SUBJECT = (
    "SELECT notice_id, status FROM notification_outbox WHERE tenant_id = ? AND subject_ref = ?"
)
NOTICE_FINAL = ("sent", "failed")
NOTICE_FORGET = (
    "UPDATE notification_outbox SET context = ?, subject_ref = ? WHERE tenant_id = ?"
    " AND notice_id = ? AND status IN ('sent', 'failed')"
)
NOTICE_LOAD = (
    "SELECT subject_ref, kind, channel, context, sealed FROM notification_outbox"
    " WHERE tenant_id = ? AND notice_id = ?"
)
NOTICE_CLEAR_SEALED = (
    "UPDATE notification_outbox SET sealed = NULL WHERE tenant_id = ? AND notice_id = ?"
)


@dataclass(frozen=True)
class StoredNotice:
    """A notice as its outbox row holds it; ``sealed`` is still encrypted (or None)."""

    subject_ref: str
    kind: str
    channel: str | None
    context: dict[str, Any]
    sealed: str | None


async def load_notice(tx: Transaction, tenant_id: str, notice_id: str) -> StoredNotice | None:
    """The tenant's notice row, for the worker that sends it (it renders from this only)."""
    row = await tx.fetchone(NOTICE_LOAD, (tenant_id, notice_id))
    if row is None:
        return None
    subject_ref, kind, channel, context, sealed = row
    return StoredNotice(subject_ref, kind, channel, json.loads(context), sealed)


def clear_sealed(tx: Transaction, tenant_id: str, notice_id: str) -> None:
    """Drop the notice's sealed secrets (staged with the ``sent`` record)."""
    tx.stage(NOTICE_CLEAR_SEALED, (tenant_id, notice_id))


def set_notice_status(tx: Transaction, tenant_id: str, notice_id: str, status: str) -> None:
    """Mirror a notice's delivery state on its outbox row, for queries and ``notices list``."""
    tx.stage(NOTICE_STATUS, (status, tenant_id, notice_id))


async def notice_queued(tx: Transaction, tenant_id: str, notice_id: str) -> bool:
    """Whether the notice is in this tenant's notification outbox."""
    return await tx.fetchone(NOTICE_KNOWN, (tenant_id, notice_id)) is not None


async def prune(tx: Transaction, before: str) -> tuple[int, int]:
    """Delete inbox rows processed and event rows published before ``before`` (ISO time);
    the numbers of rows deleted (inbox, events)."""
    inbox = await tx.execute(INBOX_PRUNE, (before,))
    events = await tx.execute(EVENTS_PRUNE, (before,))
    return inbox, events
