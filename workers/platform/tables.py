"""The platform's personal data, as tenants load it, and the marks the rights leave on it.

The tables here are what the data-subject rights act on (``config/datamap.toml``
describes each one). Restrictions (POPIA s14(6); GDPR art 18) are kept beside
the data: a restricted subject, or a restricted category of their data, is
storage-only. The query helpers below honour that, so processing code that
goes through them cannot use restricted data by accident.
"""

from __future__ import annotations

from infra.store import Transaction
from infra.store.migrations import Migration, Schema, portable
from workers.platform.optouts import objection_covers, objections_of

BASELINE = """
CREATE TABLE IF NOT EXISTS debtors (
    tenant_id     TEXT NOT NULL,
    subject_ref   TEXT NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    id_number     TEXT,
    date_of_birth TEXT,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS debtors_id_number ON debtors (tenant_id, id_number);

CREATE TABLE IF NOT EXISTS contact_points (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    is_primary  INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS contact_points_subject ON contact_points (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS accounts (
    account_id      TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    subject_ref     TEXT NOT NULL,
    creditor        TEXT NOT NULL,
    reference       TEXT NOT NULL,
    debt_type       TEXT NOT NULL DEFAULT 'ordinary',
    balance_cents   INTEGER NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('open', 'closed', 'written_off', 'prescribed')),
    opened_on       TEXT NOT NULL,
    closed_on       TEXT,
    last_payment_on TEXT,
    PRIMARY KEY (tenant_id, account_id)
);
CREATE INDEX IF NOT EXISTS accounts_subject ON accounts (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS payments (
    tenant_id      TEXT NOT NULL,
    subject_ref    TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    amount_cents   INTEGER NOT NULL,
    paid_on        TEXT NOT NULL,
    method         TEXT NOT NULL,
    bank_reference TEXT
);
CREATE INDEX IF NOT EXISTS payments_subject ON payments (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS communications (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    channel     TEXT NOT NULL,
    sent_at     TEXT NOT NULL,
    summary     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS communications_subject ON communications (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS notes (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    author      TEXT NOT NULL,
    written_at  TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_subject ON notes (tenant_id, subject_ref);

CREATE TABLE IF NOT EXISTS restrictions (
    tenant_id     TEXT NOT NULL,
    subject_ref   TEXT NOT NULL,
    scope         TEXT NOT NULL,
    origin        TEXT NOT NULL CHECK (origin IN ('requested', 'retention')),
    basis         TEXT NOT NULL,
    request_id    TEXT,
    since         TEXT NOT NULL,
    until         TEXT,
    lift_after    TEXT,
    PRIMARY KEY (tenant_id, subject_ref, scope)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS suppression_list (
    tenant_id      TEXT NOT NULL,
    channel        TEXT NOT NULL,
    contact_digest TEXT NOT NULL,
    basis          TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    expires_on     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, channel, contact_digest)
) WITHOUT ROWID;
"""

#: SQLite cannot add a primary key to a table: rebuild it, keeping each row's rowid as its id,
#: so "the first contact point of a kind" keeps meaning the same row.
CONTACT_POINT_IDS = """
CREATE TABLE contact_points_v2 (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    is_primary  INTEGER NOT NULL DEFAULT 1
);
INSERT INTO contact_points_v2 (id, tenant_id, subject_ref, kind, value, is_primary)
    SELECT rowid, tenant_id, subject_ref, kind, value, is_primary FROM contact_points;
DROP TABLE contact_points;
ALTER TABLE contact_points_v2 RENAME TO contact_points;
CREATE INDEX contact_points_subject ON contact_points (tenant_id, subject_ref);
"""

#: Suppression entries keep the time of the withdrawal they stand for (a grant not newer
#: than it changes nothing), per channel and purpose, and whether the person refused when
#: asked (POPIA s69(2)(a)). Entries of the old shape covered every purpose; their
#: withdrawal time is taken as the time they were recorded (the erasure), which is later
#: than the withdrawal itself: the conservative choice for a suppression.
SUPPRESSION_V2 = """
CREATE TABLE suppression_list_v2 (
    tenant_id      TEXT NOT NULL,
    contact_digest TEXT NOT NULL,
    channel        TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    basis          TEXT NOT NULL,
    withdrawn_at   TEXT NOT NULL,
    never_ask      INTEGER NOT NULL DEFAULT 0,
    recorded_at    TEXT NOT NULL,
    expires_on     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, contact_digest, channel, purpose)
) WITHOUT ROWID;
INSERT INTO suppression_list_v2 (tenant_id, contact_digest, channel, purpose, basis,
    withdrawn_at, never_ask, recorded_at, expires_on)
    SELECT tenant_id, contact_digest, channel, '*', basis, recorded_at, 0, recorded_at,
        expires_on FROM suppression_list;
DROP TABLE suppression_list;
ALTER TABLE suppression_list_v2 RENAME TO suppression_list;
"""

#: Holds apply per record (docs/rules.md "Erasure and retention holds"): a note may be
#: about one account, and a judgment debt prescribes 30 years from the judgment.
RECORD_LINKS = """
ALTER TABLE accounts ADD COLUMN judgment_on TEXT;
ALTER TABLE notes ADD COLUMN account_id TEXT;
"""

CONTACT_POINT_IDS_POSTGRESQL = """
ALTER TABLE contact_points ADD COLUMN id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY;
"""

PLATFORM = Schema(
    "platform",
    (
        Migration(1, "debtors, contacts, accounts, payments, notes, marks", portable(BASELINE)),
        Migration(
            2,
            "contact points get an id",
            {"sqlite": CONTACT_POINT_IDS, "postgresql": CONTACT_POINT_IDS_POSTGRESQL},
        ),
        Migration(3, "suppression per channel and purpose, since when", portable(SUPPRESSION_V2)),
        Migration(4, "judgment dates; notes about an account", portable(RECORD_LINKS)),
    ),
)

#: The platform's personal-data tables as a platform database of its own holds them
#: (``privacyops seed --source NAME``; issue 13): the data map's tables at their current
#: shape, without privacyops' marks (restrictions and suppression stay in privacyops' store).
SOURCE_TABLES = """
CREATE TABLE IF NOT EXISTS debtors (
    tenant_id     TEXT NOT NULL,
    subject_ref   TEXT NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    id_number     TEXT,
    date_of_birth TEXT,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS debtors_id_number ON debtors (tenant_id, id_number);
CREATE TABLE IF NOT EXISTS contact_points (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    is_primary  INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS contact_points_subject ON contact_points (tenant_id, subject_ref);
CREATE TABLE IF NOT EXISTS accounts (
    account_id      TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    subject_ref     TEXT NOT NULL,
    creditor        TEXT NOT NULL,
    reference       TEXT NOT NULL,
    debt_type       TEXT NOT NULL DEFAULT 'ordinary',
    balance_cents   INTEGER NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('open', 'closed', 'written_off', 'prescribed')),
    opened_on       TEXT NOT NULL,
    closed_on       TEXT,
    last_payment_on TEXT,
    judgment_on     TEXT,
    PRIMARY KEY (tenant_id, account_id)
);
CREATE INDEX IF NOT EXISTS accounts_subject ON accounts (tenant_id, subject_ref);
CREATE TABLE IF NOT EXISTS payments (
    tenant_id      TEXT NOT NULL,
    subject_ref    TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    amount_cents   INTEGER NOT NULL,
    paid_on        TEXT NOT NULL,
    method         TEXT NOT NULL,
    bank_reference TEXT
);
CREATE INDEX IF NOT EXISTS payments_subject ON payments (tenant_id, subject_ref);
CREATE TABLE IF NOT EXISTS communications (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    channel     TEXT NOT NULL,
    sent_at     TEXT NOT NULL,
    summary     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS communications_subject ON communications (tenant_id, subject_ref);
CREATE TABLE IF NOT EXISTS notes (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    author      TEXT NOT NULL,
    written_at  TEXT NOT NULL,
    body        TEXT NOT NULL,
    account_id  TEXT
);
CREATE INDEX IF NOT EXISTS notes_subject ON notes (tenant_id, subject_ref);
"""

#: The scope of a restriction that covers all of a subject's data.
ALL = "*"

RESTRICTION_UPSERT = (
    "INSERT INTO restrictions (tenant_id, subject_ref, scope, origin, basis, request_id, since,"
    " until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, subject_ref, scope)"
    " DO UPDATE SET origin = excluded.origin, basis = excluded.basis,"
    " request_id = excluded.request_id, until = excluded.until, lift_after = NULL"
)


CONTACT_LOOKUP = (
    "SELECT value FROM contact_points WHERE tenant_id = ? AND subject_ref = ? AND kind = ?"
    " ORDER BY is_primary DESC, id LIMIT 1"
)


async def restricted_scopes(tx: Transaction, tenant_id: str, subject_ref: str) -> set[str]:
    """The restricted scopes of a subject: ``*`` for all, else table or category names."""
    rows = await tx.fetchall(
        "SELECT scope FROM restrictions WHERE tenant_id = ? AND subject_ref = ?",
        (tenant_id, subject_ref),
    )
    return {row[0] for row in rows}


async def usable_contact(
    tx: Transaction, tenant_id: str, subject_ref: str, kind: str, purpose: str
) -> str | None:
    """A contact point that may be used for ``purpose`` (marketing...); None if not.

    None when the subject's contact data is restricted (POPIA s14(6): storage-only),
    or when an objection stopped the purpose (POPIA s11(3): an objection to direct
    marketing covers every marketing purpose). Whether the subject consented to the
    purpose is the consent worker's question (``workers.consent.is_contactable``).
    Notices about the subject's own request are not marketing and read the table directly.
    """
    scopes = await restricted_scopes(tx, tenant_id, subject_ref)
    if scopes & {ALL, "contact_points", "contact"}:
        return None
    objected = (await objections_of(tx, tenant_id, [subject_ref])).get(subject_ref, {})
    if objection_covers(objected, purpose) is not None:
        return None
    return await contact(tx, tenant_id, subject_ref, kind)


async def contact(tx: Transaction, tenant_id: str, subject_ref: str, kind: str) -> str | None:
    """The subject's primary contact point of a kind (``email``, ``phone``), else the first."""
    row = await tx.fetchone(CONTACT_LOOKUP, (tenant_id, subject_ref, kind))
    return str(row[0]) if row else None
