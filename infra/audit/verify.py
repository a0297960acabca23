"""``privacyops audit verify``: walk each tenant's chain and name the first broken row.

The rows of a tenant are read in the order they were written (``id``), a page at a
time, and each is checked against what the chain says it must be:

* it has a place (``seq``); else it was added by hand after the chain began
  (``not_in_chain``);
* its ``seq`` is one more than the row before's; else rows before it were deleted
  (``missing``) or rows were moved (``out_of_order``);
* its ``prev_hash`` is the row before's ``row_hash``; else the row before was rewritten
  after this one was linked (``rewritten``, naming the row before);
* its ``row_hash`` is recomputed from its content; else a field was changed (``content``);
* a signed checkpoint at its ``seq`` has its ``row_hash``; else the chain up to it was
  replaced, hashes and all (``checkpoint``);
* the chain ends at its head and reaches every checkpoint; else its tail was cut off
  (``tail_missing``) or rows were added after the head (``beyond_head``);
* every checkpoint's signature verifies with an audit key (``checkpoint_forged``).

Rows written before the chain existed (``seq`` NULL, before the first linked row) are
counted as ``unchained``, not broken. After a prune the chain starts at its base
(``audit_chain_head.base_seq``), which must be a signed checkpoint.

Why: POPIA s19(1)-(2) (integrity; verify that safeguards work), GDPR art 5(2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from infra.audit.chain import Entry
from infra.audit.checkpoints import stored, tenants
from infra.audit.proof import GENESIS, Checkpoint, link
from infra.audit.tables import HEAD, ROWS_AFTER, SEQ_AT
from infra.store import Row, Store

PAGE = 2_000


@dataclass(frozen=True)
class Break:
    """The first broken place of a tenant's chain: which row, and what differs."""

    problem: str
    detail: str
    id: int | None = None
    seq: int | None = None
    recorded_at: str | None = None


@dataclass
class Report:
    """One tenant's chain as verified."""

    tenant_id: str
    rows: int = 0
    unchained: int = 0
    head_seq: int = 0
    base_seq: int = 0
    checkpoints: int = 0
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Walk:
    """Where the walk is: the seq and hash the next row must continue from."""

    expected: int
    prev: str
    last: Row | None = None
    started: bool = False
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)


async def verify_tenant(store: Store, tenant_id: str, keys: Mapping[str, bytes]) -> Report:
    """Walk the tenant's chain; the report names the first break, if any."""
    report = Report(tenant_id)
    async with store.transaction() as tx:
        head = await tx.fetchone(HEAD, (tenant_id,))
        checkpoints = await stored(tx, tenant_id)
    head_seq, head_hash, base_seq, base_hash = head or (0, GENESIS, 0, GENESIS)
    report.head_seq, report.base_seq = int(head_seq), int(base_seq)
    report.checkpoints = len(checkpoints)
    walk = _Walk(int(base_seq) + 1, str(base_hash), checkpoints={c.seq: c for c in checkpoints})
    report.broken = _check_checkpoints(checkpoints, keys, report.base_seq, str(base_hash))
    after = 0
    while report.broken is None:
        async with store.transaction() as tx:
            rows = await tx.fetchall(ROWS_AFTER, (tenant_id, after, PAGE))
        for row in rows:
            report.broken = _check_row(walk, row, report)
            if report.broken is not None:
                report.broken = await _moved(store, tenant_id, walk.expected, report.broken)
                return report
        if len(rows) < PAGE:
            break
        after = int(rows[-1][0])
    if report.broken is None:
        report.broken = _check_end(walk, report.head_seq, str(head_hash))
    return report


async def _moved(store: Store, tenant_id: str, expected: int, found: Break) -> Break:
    """A "missing" row that is in fact stored elsewhere: rows were moved, not deleted."""
    if found.problem != "missing":
        return found
    async with store.transaction() as tx:
        elsewhere = await tx.fetchone(SEQ_AT, (tenant_id, expected))
    if elsewhere is None:
        return found
    detail = (
        f"seq {found.seq} where {expected} was expected; seq {expected} is stored at row id"
        f" {elsewhere[0]}: rows were moved"
    )
    return Break("out_of_order", detail, found.id, found.seq, found.recorded_at)


def _check_checkpoints(
    checkpoints: list[Checkpoint], keys: Mapping[str, bytes], base_seq: int, base_hash: str
) -> Break | None:
    for c in checkpoints:
        if not c.valid(keys):
            return Break(
                "checkpoint_forged",
                f"checkpoint of seq {c.seq} (made {c.made_at}, key {c.key_id}) does not verify"
                " with any audit key",
                seq=c.seq,
            )
    if base_seq and not any(c.seq == base_seq and c.row_hash == base_hash for c in checkpoints):
        return Break(
            "base_unsigned",
            f"the chain starts after seq {base_seq}, which no signed checkpoint vouches for",
            seq=base_seq,
        )
    return None


def _check_row(walk: _Walk, row: Row, report: Report) -> Break | None:
    row_id, seq, prev_hash, row_hash = int(row[0]), row[10], row[11], row[12]
    recorded_at = str(row[2])
    if seq is None:
        if not walk.started:
            report.unchained += 1
            return None
        return Break(
            "not_in_chain",
            "row has no place in the chain: added after it",
            row_id,
            None,
            recorded_at,
        )
    walk.started = True
    report.rows += 1
    seq = int(seq)
    if seq != walk.expected:
        if seq > walk.expected:
            gap = seq - walk.expected
            detail = f"seq {seq} where {walk.expected} was expected: {gap} row(s) before it missing"
            return Break("missing", detail, row_id, seq, recorded_at)
        detail = f"seq {seq} where {walk.expected} was expected: rows moved or duplicated"
        return Break("out_of_order", detail, row_id, seq, recorded_at)
    if prev_hash != walk.prev:
        if walk.last is None:
            detail = "prev_hash is not the chain's start (genesis or the pruned base)"
            return Break("rewritten", detail, row_id, seq, recorded_at)
        last = walk.last
        detail = f"row_hash no longer what the next row (id {row_id}) linked to: rewritten after it"
        return Break("rewritten", detail, int(last[0]), int(last[10]), str(last[2]))
    entry = Entry.staged(row[1:10], seq)
    if link(walk.prev, entry.digest()) != row_hash:
        detail = "content differs from what its row_hash covers: a field was changed"
        return Break("content", detail, row_id, seq, recorded_at)
    checkpoint = walk.checkpoints.get(seq)
    if checkpoint is not None and checkpoint.row_hash != row_hash:
        detail = (
            f"row_hash differs from the signed checkpoint of seq {seq} made {checkpoint.made_at}:"
            " the chain up to here was replaced after it"
        )
        return Break("checkpoint", detail, row_id, seq, recorded_at)
    walk.expected, walk.prev, walk.last = seq + 1, str(row_hash), row
    return None


def _check_end(walk: _Walk, head_seq: int, head_hash: str) -> Break | None:
    last_seq = walk.expected - 1
    beyond = [s for s in walk.checkpoints if s > last_seq]
    target = max([head_seq, *beyond])
    last_id = int(walk.last[0]) if walk.last is not None else None
    last_at = str(walk.last[2]) if walk.last is not None else None
    if target > last_seq:
        detail = (
            f"the chain ends at seq {last_seq} but its head or a signed checkpoint says"
            f" {target}: seq {last_seq + 1} to {target} missing (tail cut off)"
        )
        return Break("tail_missing", detail, last_id, last_seq + 1, last_at)
    if head_seq < last_seq:
        detail = f"rows up to seq {last_seq} but the head says {head_seq}: rows added after it"
        return Break("beyond_head", detail, last_id, last_seq, last_at)
    if head_seq and head_hash != walk.prev:
        return Break("head", "the chain head's hash is not the last row's", last_id, last_seq)
    return None


async def verify(store: Store, keys: Mapping[str, bytes], tenant_id: str | None) -> list[Report]:
    """Every tenant's report (or the one asked for)."""
    chosen = [tenant_id] if tenant_id else await tenants(store)
    return [await verify_tenant(store, t, keys) for t in chosen]
