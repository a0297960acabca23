"""The hash chain over ``audit_log``: one chain per tenant, linked as rows are written.

Every audit row of a tenant has a place in its tenant's chain (``seq``: 1, 2, 3...)
and two hashes (SHA-256, lower-case hex):

* ``digest = SHA-256(canonical(content))``, where ``content`` is the row's fields
  (``FIELDS``) plus ``format`` and ``seq``, and ``canonical`` is JSON with sorted
  keys, no spaces, UTF-8;
* ``row_hash = SHA-256(prev_hash + digest)`` (the two hex strings, ASCII), where
  ``prev_hash`` is the previous row's ``row_hash`` (``GENESIS`` for ``seq`` 1).

The digest is kept apart from the link so that an export can prove one subject's
rows are in the chain while giving only the digests of everyone else's rows
(``infra/audit/bundle.py``).

Appending (``AuditChain``, a store write hook): the rows staged with ``AUDIT_INSERT``
are held back until the transaction's last flush (or a read of ``audit_log``), then,
tenant by tenant in sorted order, the tenant's chain head row is locked and read
(``HEAD_LOCK``: an upsert, so it is a row lock on PostgreSQL and exists on first
use), the rows are linked and inserted, and the head moves on (``HEAD_MOVE``), all
in the effect's own transaction. Two processes appending to one tenant take turns
on that one row; other tenants never wait (no global lock). Taking the head locks
last, in a fixed order, keeps them out of deadlocks with the runtime's other locks
and keeps them held only for the commit. On SQLite ``BEGIN IMMEDIATE`` already
serialises writers.

Why: POPIA s19(1) (safeguard the integrity of the information against unlawful
alteration), GDPR art 5(1)(f) and 5(2) (integrity; accountability).

The hashing itself is ``infra/audit/proof.py`` (what a third party runs). Nothing
from ``infra`` is imported at run time here but that: the store imports this module
while it is itself being imported (``infra/store/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from infra.audit.proof import FIELDS, GENESIS, digest_of_values, link

if TYPE_CHECKING:
    from infra.store.base import Row, Transaction

_COLUMNS = ", ".join(FIELDS)
_MARKS = ", ".join("?" for _ in FIELDS)
#: What effects stage (``Effects.audit``); the chain hook links these rows at flush.
AUDIT_INSERT = f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({_MARKS})"
CHAINED_INSERT = (
    f"INSERT INTO audit_log ({_COLUMNS}, seq, prev_hash, row_hash) VALUES ({_MARKS}, ?, ?, ?)"
)
#: Lock the tenant's head row (created at seq 0 on first use) and read it.
HEAD_LOCK = (
    "INSERT INTO audit_chain_head (tenant_id, seq, row_hash, updated_at) VALUES (?, 0, ?, ?)"
    " ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_chain_head.seq RETURNING seq, row_hash"
)
HEAD_MOVE = "UPDATE audit_chain_head SET seq = ?, row_hash = ?, updated_at = ? WHERE tenant_id = ?"


@dataclass(frozen=True)
class Entry:
    """One audit row's hashed content: its fields and its place in the chain."""

    tenant_id: str
    seq: int
    recorded_at: str
    actor: str
    action: str
    subject_ref: str | None
    message_id: str | None
    correlation_id: str | None
    attempt: int | None
    details: str

    @classmethod
    def staged(cls, params: Sequence[Any], seq: int) -> Entry:
        """From ``AUDIT_INSERT``'s parameters."""
        values = dict(zip(FIELDS, params, strict=True))
        return cls(seq=seq, **values)

    def digest(self) -> str:
        """Over the fields and ``seq`` (``details`` as the stored JSON text, byte for byte)."""
        return digest_of_values(self.params(), self.seq)

    def params(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in FIELDS)


class AuditChain:
    """The store write hook that links ``AUDIT_INSERT`` rows into their tenant's chain."""

    statement = AUDIT_INSERT
    table = "audit_log"

    async def rewrite(self, tx: Transaction, rows: list[Row]) -> list[tuple[str, list[Row]]]:
        """The chained inserts and the head moves that replace ``rows``.

        Locks each tenant's head (sorted, so two transactions never deadlock here).
        """
        by_tenant: dict[str, list[Row]] = {}
        for params in rows:
            by_tenant.setdefault(str(params[0]), []).append(params)
        now = datetime.now(UTC).isoformat()
        inserts: list[Row] = []
        heads: list[Row] = []
        for tenant in sorted(by_tenant):
            head = await tx.fetchone(HEAD_LOCK, (tenant, GENESIS, now))
            assert head is not None, "the head upsert returns the row"
            seq, prev = int(head[0]), str(head[1])
            for params in by_tenant[tenant]:
                seq += 1
                row_hash = link(prev, digest_of_values(params, seq))
                inserts.append((*params, seq, prev, row_hash))
                prev = row_hash
            heads.append((seq, prev, now, tenant))
        return [(CHAINED_INSERT, inserts), (HEAD_MOVE, heads)]
