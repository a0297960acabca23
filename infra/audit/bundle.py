"""``privacyops audit export``: a signed bundle of audit rows a third party can verify.

What the Information Regulator or a court asks ("what did you do with this
person's request, and when") answered with rows it can check without our store:

* ``rows.jsonl``: the rows asked for (a subject, a request, or a time window), one
  canonical JSON object a line, with their ``seq``, ``prev_hash`` and ``row_hash``;
* ``manifest.json``: the tenant, the selection, the SHA-256 of ``rows.jsonl``, the
  chain segment from the first row asked for to the checkpoint covering the last
  (``prev_hash`` of its start and the *digests* of the other rows in it: other
  subjects' rows are never disclosed, only proven to be there), that checkpoint,
  the audit public key, and an Ed25519 signature over all of it.

If no checkpoint covers the rows yet, one is made (and published) first. Checking
needs no store: ``infra/audit/proof.py`` (``privacyops audit verify-bundle``).

Rows hold opaque references and keyed digests only (POPIA s19, s24), so a bundle
carries no personal data; it goes to the requester under POPIA s23 / PAIA or to the
Regulator under POPIA s89-s92 (assessments and investigations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.secrets import private_dir, write_private
from infra.audit.chain import Entry
from infra.audit.checkpoints import make_one, stored
from infra.audit.proof import (
    BUNDLE_FORMAT,
    FIELDS,
    MANIFEST_FILE,
    ROWS_FILE,
    Checkpoint,
    canonical,
    sha256,
    unsigned,
)
from infra.audit.tables import ROWS_BY_SEQ
from infra.keys import AuditSigner
from infra.runtime.worker import Sink
from infra.store import Row, Store
from messages.errors import RuleViolation

_SELECT = (
    "SELECT id, tenant_id, recorded_at, actor, action, subject_ref, message_id, correlation_id,"
    " attempt, details, seq, prev_hash, row_hash FROM audit_log WHERE tenant_id = ?"
    " AND seq IS NOT NULL"
)
BY_SUBJECT = _SELECT + " AND subject_ref = ? ORDER BY seq"
BY_REQUEST = _SELECT + " AND (correlation_id = ? OR message_id = ? OR details LIKE ?) ORDER BY seq"
BY_TIME = (
    _SELECT + " AND (CAST(? AS TEXT) IS NULL OR recorded_at >= ?)"
    " AND (CAST(? AS TEXT) IS NULL OR recorded_at < ?) ORDER BY seq"
)


@dataclass(frozen=True)
class Selection:
    """Which rows: a subject's, a request's, or those recorded in ``[since, until)``."""

    subject_ref: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        kinds = [self.subject_ref is not None, self.request_id is not None]
        kinds.append(self.since is not None or self.until is not None)
        if sum(kinds) != 1:
            raise ValueError("choose one of --subject, --request or --since/--until")

    def describe(self) -> dict[str, str]:
        picked = {
            "subject_ref": self.subject_ref,
            "request_id": self.request_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {k: v for k, v in picked.items() if v is not None}


async def select(store: Store, tenant_id: str, selection: Selection) -> list[Row]:
    async with store.transaction() as tx:
        if selection.subject_ref is not None:
            return await tx.fetchall(BY_SUBJECT, (tenant_id, selection.subject_ref))
        if selection.request_id is not None:
            rid = selection.request_id
            rows = await tx.fetchall(BY_REQUEST, (tenant_id, rid, rid, f"%{rid}%"))
            return [r for r in rows if rid in (r[6], r[7]) or _names_request(r[9], rid)]
        since = selection.since.astimezone(UTC).isoformat() if selection.since else None
        until = selection.until.astimezone(UTC).isoformat() if selection.until else None
        return await tx.fetchall(BY_TIME, (tenant_id, since, since, until, until))


def _names_request(details: str, request_id: str) -> bool:
    try:
        return bool(json.loads(details).get("request_id") == request_id)
    except (ValueError, AttributeError):
        return False


async def covering(
    store: Store, signer: AuditSigner, sink: Sink | None, tenant_id: str, seq: int
) -> Checkpoint:
    """The first checkpoint at or after ``seq``; made now if there is none yet."""
    for attempt in range(2):
        async with store.transaction() as tx:
            found = [c for c in await stored(tx, tenant_id) if c.seq >= seq]
        if found:
            return found[0]
        if attempt == 0:
            await make_one(store, signer, sink, tenant_id)
    raise RuleViolation("no checkpoint covers the rows: the chain head is behind them")


def row_json(row: Row) -> dict[str, Any]:
    fields = dict(zip(FIELDS, row[1:10], strict=True))
    return {
        "id": int(row[0]),
        **fields,
        "seq": int(row[10]),
        "prev_hash": row[11],
        "row_hash": row[12],
    }


async def export(
    store: Store,
    signer: AuditSigner,
    sink: Sink | None,
    tenant_id: str,
    selection: Selection,
    out: Path,
) -> tuple[Path, int]:
    """Write the bundle into the new folder ``out``; the folder and the rows exported."""
    rows = await select(store, tenant_id, selection)
    if not rows:
        raise RuleViolation("no audit rows match the selection")
    first, last = int(rows[0][10]), int(rows[-1][10])
    checkpoint = await covering(store, signer, sink, tenant_id, last)
    async with store.transaction() as tx:
        segment = await tx.fetchall(ROWS_BY_SEQ, (tenant_id, first, checkpoint.seq))
    chosen = {int(r[10]) for r in rows}
    digests = {str(int(r[10])): _digest(r) for r in segment if int(r[10]) not in chosen}
    body = b"".join(canonical(row_json(r)) + b"\n" for r in rows)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "tenant_id": tenant_id,
        "selection": selection.describe(),
        "made_at": datetime.now(UTC).isoformat(),
        "rows": len(rows),
        "rows_sha256": sha256(body),
        "segment": {"first_seq": first, "prev_hash": rows[0][11], "digests": digests},
        "checkpoint": checkpoint.as_dict(),
        "public_key": {"key_id": signer.key_id, "ed25519": signer.public_key.hex()},
    }
    manifest["signature"] = signer.sign(unsigned(manifest))
    private_dir(out)
    write_private(out / ROWS_FILE, body)
    write_private(out / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return out, len(rows)


def _digest(row: Row) -> str:
    return Entry.staged(row[1:10], int(row[10])).digest()
