"""The console's own tables, component ``console`` (numbered from 1, like every component).

* ``console_admins``: named admin accounts; ``password_hash`` is argon2id (never the
  password); ``role`` is ``viewer`` (reads) or ``operator`` (reads and acts);
  ``tenants`` a JSON list, empty for every tenant.
* ``console_sessions``: one row per login; the cookie holds a random token and the
  row only its SHA-256 digest, beside the session's CSRF token and expiry.
* ``console_package_reviews``: where a tenant reviews access packages before release,
  one row per package: ``pending`` until an admin approves it (who, when).

Every statement on these tables lives here, so the tables have one owner.
"""

from __future__ import annotations

from infra.store.migrations import Migration, Schema, portable

BASELINE = """
CREATE TABLE IF NOT EXISTS console_admins (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
    tenants       TEXT NOT NULL DEFAULT '[]',
    created_at    TEXT NOT NULL,
    disabled_at   TEXT
);

CREATE TABLE IF NOT EXISTS console_sessions (
    token_digest TEXT PRIMARY KEY,
    admin        TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_admin ON console_sessions (admin);

CREATE TABLE IF NOT EXISTS console_package_reviews (
    tenant_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'approved')),
    decided_by  TEXT,
    decided_at  TEXT,
    PRIMARY KEY (tenant_id, request_id)
);
"""

CONSOLE = Schema(
    "console",
    (Migration(1, "admin accounts, sessions and package reviews", portable(BASELINE)),),
)

ADMIN_INSERT = (
    "INSERT INTO console_admins (name, password_hash, role, tenants, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
ADMIN_UPDATE = (
    "UPDATE console_admins SET password_hash = ?, role = ?, tenants = ?, disabled_at = NULL"
    " WHERE name = ?"
)
ADMIN_FIND = (
    "SELECT name, password_hash, role, tenants FROM console_admins"
    " WHERE name = ? AND disabled_at IS NULL"
)
ADMIN_LIST = "SELECT name, role, tenants, created_at, disabled_at FROM console_admins ORDER BY name"
ADMIN_DISABLE = "UPDATE console_admins SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL"
ADMIN_REHASH = "UPDATE console_admins SET password_hash = ? WHERE name = ?"
SESSION_INSERT = (
    "INSERT INTO console_sessions (token_digest, admin, csrf, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
SESSION_FIND = (
    "SELECT s.admin, s.csrf, s.expires_at, a.role, a.tenants FROM console_sessions s"
    " JOIN console_admins a ON a.name = s.admin AND a.disabled_at IS NULL"
    " WHERE s.token_digest = ?"
)
SESSION_DELETE = "DELETE FROM console_sessions WHERE token_digest = ?"
SESSION_DELETE_ADMIN = "DELETE FROM console_sessions WHERE admin = ?"
SESSIONS_EXPIRED = "DELETE FROM console_sessions WHERE expires_at <= ?"
REVIEW_FIND = (
    "SELECT state, decided_by, decided_at FROM console_package_reviews"
    " WHERE tenant_id = ? AND request_id = ?"
)
REVIEW_APPROVE = (
    "INSERT INTO console_package_reviews (tenant_id, request_id, state, decided_by, decided_at)"
    " VALUES (?, ?, 'approved', ?, ?) ON CONFLICT (tenant_id, request_id) DO UPDATE SET"
    " state = 'approved', decided_by = excluded.decided_by, decided_at = excluded.decided_at"
)
