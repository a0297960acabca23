"""The ``audit_chain`` component: the chain's columns on ``audit_log``, heads, checkpoints.

* ``audit_log.seq``, ``prev_hash``, ``row_hash``: each row's place and hashes in its
  tenant's chain (``infra/audit/chain.py``); NULL on rows written before the chain
  existed, which ``verify`` reports as unchained and never as links;
* ``audit_chain_head``: one row per tenant, the last ``seq`` and ``row_hash``. Its row
  lock serialises appends of one tenant. ``base_seq``/``base_hash``: where the kept
  chain starts after a prune (0 and ``GENESIS`` before any), always a signed checkpoint;
* ``audit_checkpoints``: signed heads (``infra/audit/checkpoints.py``).

Every statement on these tables lives here or in ``chain.py`` (the append), so the
tables have one owner. Every query names the tenant.
"""

from __future__ import annotations

from infra.audit.proof import GENESIS
from infra.store.migrations import Migration, Schema, portable

CHAIN = f"""
ALTER TABLE audit_log ADD COLUMN seq INTEGER;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN row_hash TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_seq ON audit_log (tenant_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_walk ON audit_log (tenant_id, id);

CREATE TABLE IF NOT EXISTS audit_chain_head (
    tenant_id  TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    row_hash   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    base_seq   INTEGER NOT NULL DEFAULT 0,
    base_hash  TEXT NOT NULL DEFAULT '{GENESIS}'
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tenant_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    row_hash   TEXT NOT NULL,
    made_at    TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
"""

AUDIT_CHAIN = Schema(
    "audit_chain",
    (Migration(1, "audit log hash chain: row hashes, chain heads, checkpoints", portable(CHAIN)),),
)

TENANTS = (
    "SELECT tenant_id FROM audit_chain_head UNION SELECT DISTINCT tenant_id FROM audit_log"
    " ORDER BY tenant_id"
)
HEAD = "SELECT seq, row_hash, base_seq, base_hash FROM audit_chain_head WHERE tenant_id = ?"
#: A page of a tenant's rows in the order they were written (``id``).
ROWS_AFTER = (
    "SELECT id, tenant_id, recorded_at, actor, action, subject_ref, message_id, correlation_id,"
    " attempt, details, seq, prev_hash, row_hash FROM audit_log WHERE tenant_id = ? AND id > ?"
    " ORDER BY id LIMIT ?"
)
ROWS_BY_SEQ = (
    "SELECT id, tenant_id, recorded_at, actor, action, subject_ref, message_id, correlation_id,"
    " attempt, details, seq, prev_hash, row_hash FROM audit_log WHERE tenant_id = ?"
    " AND seq >= ? AND seq <= ? ORDER BY seq"
)
SEQ_AT = "SELECT id FROM audit_log WHERE tenant_id = ? AND seq = ? ORDER BY id LIMIT 1"
CHECKPOINTS = (
    "SELECT seq, row_hash, made_at, key_id, signature FROM audit_checkpoints"
    " WHERE tenant_id = ? ORDER BY seq"
)
CHECKPOINT_INSERT = (
    "INSERT INTO audit_checkpoints (tenant_id, seq, row_hash, made_at, key_id, signature)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, seq) DO NOTHING"
)
LATEST_CHECKPOINT = (
    "SELECT seq, row_hash, made_at, key_id, signature FROM audit_checkpoints"
    " WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1"
)
#: Pruning: whole segments before a checkpoint go, and the head remembers where it starts.
PRUNE_ROWS = "DELETE FROM audit_log WHERE tenant_id = ? AND seq <= ?"
PRUNE_UNCHAINED = "DELETE FROM audit_log WHERE tenant_id = ? AND seq IS NULL AND recorded_at < ?"
MOVE_BASE = "UPDATE audit_chain_head SET base_seq = ?, base_hash = ? WHERE tenant_id = ?"
PRUNE_CHECKPOINTS = "DELETE FROM audit_checkpoints WHERE tenant_id = ? AND seq < ?"
