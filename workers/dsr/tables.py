"""The DSR worker's own tables and statements.

* ``dsr_requests`` and ``dsr_transitions``: each request and every step it took;
* ``dsr_correction_notes``: corrections requested but not made (POPIA s24);
* ``dsr_packages``: access and portability packages, by token digest;
* ``processing_flags``: objections recorded per purpose;
* ``deferred_erasures``: what a retention hold kept back, for the hold sweep;
* ``erasure_followups``: notices of an erased subject to reduce once delivered;
* ``dsr_steps``: a request's work per data source, recorded before and after each step
  (``workers/dsr/steps.py``), so an unavailable source or a crash resumes where it stopped.
"""

from __future__ import annotations

from infra.store.migrations import Migration, Schema, portable

BASELINE = """
CREATE TABLE IF NOT EXISTS dsr_requests (
    tenant_id        TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    regime           TEXT NOT NULL,
    subject_ref      TEXT,
    status           TEXT NOT NULL,
    identity_verified INTEGER NOT NULL,
    received_at      TEXT NOT NULL,
    due_on           TEXT NOT NULL,
    extended         INTEGER NOT NULL DEFAULT 0,
    reply_channel    TEXT NOT NULL,
    details          TEXT NOT NULL,
    outcome          TEXT,
    deadline_flag    TEXT,
    message_id       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dsr_requests_open ON dsr_requests (status, due_on);

CREATE TABLE IF NOT EXISTS dsr_transitions (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dsr_transitions_request ON dsr_transitions (tenant_id, request_id);

CREATE TABLE IF NOT EXISTS dsr_correction_notes (
    id              INTEGER PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    subject_ref     TEXT NOT NULL,
    field           TEXT NOT NULL,
    requested_value TEXT NOT NULL,
    reason          TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dsr_correction_notes_subject
    ON dsr_correction_notes (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS dsr_packages (
    tenant_id     TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    subject_ref   TEXT NOT NULL,
    path          TEXT NOT NULL,
    token_digest  TEXT NOT NULL UNIQUE,
    expires_at    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    downloaded_at TEXT,
    PRIMARY KEY (tenant_id, request_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS processing_flags (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    flag        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    grounds     TEXT,
    request_id  TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref, purpose)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS deferred_erasures (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    hold_group  TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    basis       TEXT NOT NULL,
    run_after   TEXT,
    PRIMARY KEY (tenant_id, subject_ref, hold_group)
) WITHOUT ROWID;
"""

#: An objection stops processing from the moment it was made, not from when it was
#: processed: a consent dated before it does not count (docs/rules.md "Objection").
OBJECTED_AT = """
ALTER TABLE processing_flags ADD COLUMN objected_at TEXT;
UPDATE processing_flags SET objected_at = recorded_at WHERE objected_at IS NULL;
"""

#: Who verified the requester's identity, how and when: the evidence of the gate in front of
#: every disclosure and change (docs/rules.md "Identity").
VERIFICATION = """
ALTER TABLE dsr_requests ADD COLUMN verified_by TEXT;
ALTER TABLE dsr_requests ADD COLUMN verification_method TEXT;
ALTER TABLE dsr_requests ADD COLUMN verified_at TEXT;
"""

#: Notices of an erased subject still on their way (the erasure's own answer among them):
#: the sweep reduces each to what the audit needs once it was sent (docs/rules.md).
ERASURE_FOLLOWUPS = """
CREATE TABLE erasure_followups (
    tenant_id   TEXT NOT NULL,
    notice_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, notice_id)
) WITHOUT ROWID;
"""

#: Where a request's answers go, fixed when it arrives (sealed with the notice key), so the
#: answer to an erasure still reaches the subject once the contact points are gone.
REPLY_ADDRESSES = """
ALTER TABLE dsr_requests ADD COLUMN reply_addresses TEXT;
"""

#: One row per request, round (0: the request; 1, 2...: deferred erasures run by the hold
#: sweep) and data source: pending -> running (recorded before the source's transaction)
#: -> done or failed (recorded after it), with the attempts and the last error's reason.
STEPS = """
CREATE TABLE dsr_steps (
    tenant_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    round       INTEGER NOT NULL,
    source      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (tenant_id, request_id, round, source)
) WITHOUT ROWID;
CREATE INDEX dsr_steps_waiting ON dsr_steps (status, next_at);
"""

DSR = Schema(
    "dsr",
    (
        Migration(1, "requests, notes, packages, flags", portable(BASELINE)),
        Migration(2, "objections: since when", portable(OBJECTED_AT)),
        Migration(3, "requests: who verified, how, when", portable(VERIFICATION)),
        Migration(4, "notices to reduce after an erasure", portable(ERASURE_FOLLOWUPS)),
        Migration(5, "requests: where answers go, sealed", portable(REPLY_ADDRESSES)),
        Migration(6, "requests: steps per data source", portable(STEPS)),
    ),
)

REQUEST_INSERT = (
    "INSERT INTO dsr_requests (tenant_id, request_id, kind, regime, subject_ref, status,"
    " identity_verified, received_at, due_on, reply_channel, details, message_id, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TRANSITION_INSERT = (
    "INSERT INTO dsr_transitions (tenant_id, request_id, at, from_status, to_status, reason)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
STATUS_UPDATE = (
    "UPDATE dsr_requests SET status = ?, outcome = COALESCE(?, outcome), updated_at = ?"
    " WHERE tenant_id = ? AND request_id = ?"
)
PACKAGE_UPSERT = (
    "INSERT INTO dsr_packages (tenant_id, request_id, subject_ref, path, token_digest,"
    " expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, request_id) DO UPDATE SET subject_ref = excluded.subject_ref,"
    " path = excluded.path, token_digest = excluded.token_digest,"
    " expires_at = excluded.expires_at, created_at = excluded.created_at,"
    " downloaded_at = NULL"
)
