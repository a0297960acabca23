"""Signed checkpoints of each tenant's audit chain, stored and published.

A checkpoint is the tenant's chain head (``seq``, ``row_hash``) and the time, signed
with the audit key (Ed25519, ``infra.keys.AuditSigner``). It is written to
``audit_checkpoints`` and, in the same transaction, an ``audit.checkpoint`` event to
the event outbox, which the outbox relay publishes on the outbound exchange: the
broker (and whoever keeps a copy) then holds evidence the store cannot rewrite. A
rewrite of the chain after a checkpoint no longer ends in its signed hash, whatever
hashes the rewriter recomputed, because the key is not in the store.

Made periodically by every service's audit worker (``audit_checkpoint_interval_s``)
and on demand (``privacyops audit checkpoint``, and by ``audit export`` when no
checkpoint covers the rows asked for). The head is read under its row lock, so two
processes checkpointing at once make one checkpoint per head, and a tenant whose
head has not moved since its last checkpoint gets none.

Why: POPIA s19(1)-(2) (integrity, verified safeguards), GDPR art 5(2) (accountability).
"""

from __future__ import annotations

from datetime import UTC, datetime

from infra.audit.chain import HEAD_LOCK
from infra.audit.proof import GENESIS, Checkpoint, checkpoint_payload
from infra.audit.tables import CHECKPOINT_INSERT, CHECKPOINTS, LATEST_CHECKPOINT, TENANTS
from infra.keys import AuditSigner
from infra.runtime.worker import Effects, Sink, announce
from infra.store import Store, Transaction
from messages.audit import AuditCheckpoint, AuditCheckpointPayload

#: Effects of a checkpoint are the runtime's audit worker's.
WORKER = "audit"


async def tenants(store: Store) -> list[str]:
    """Every tenant with an audit row or a chain head."""
    async with store.transaction() as tx:
        return [str(t) for (t,) in await tx.fetchall(TENANTS)]


async def make(
    store: Store,
    signer: AuditSigner,
    sink: Sink | None,
    tenant_ids: list[str] | None = None,
    now: datetime | None = None,
) -> list[Checkpoint]:
    """A checkpoint for each tenant whose head moved since its last one; the new ones."""
    made = []
    for tenant in tenant_ids if tenant_ids is not None else await tenants(store):
        checkpoint = await make_one(store, signer, sink, tenant, now)
        if checkpoint is not None:
            made.append(checkpoint)
    return made


async def make_one(
    store: Store,
    signer: AuditSigner,
    sink: Sink | None,
    tenant_id: str,
    now: datetime | None = None,
) -> Checkpoint | None:
    """Sign the tenant's head (under its lock), store it and queue its event."""
    moment = now or datetime.now(UTC)
    effects = Effects.standalone(WORKER, tenant_id, now=moment)
    async with store.transaction() as tx:
        head = await tx.fetchone(HEAD_LOCK, (tenant_id, GENESIS, moment.isoformat()))
        assert head is not None, "the head upsert returns the row"
        seq, row_hash = int(head[0]), str(head[1])
        latest = await tx.fetchone(LATEST_CHECKPOINT, (tenant_id,))
        if seq == 0 or (latest is not None and int(latest[0]) >= seq):
            return None
        checkpoint = sign(signer, tenant_id, seq, row_hash, moment)
        tx.stage(CHECKPOINT_INSERT, _row(checkpoint))
        effects.emit(event(checkpoint))
        tx.stage_all(effects.writes)
    announce(sink, effects)
    return checkpoint


def sign(
    signer: AuditSigner, tenant_id: str, seq: int, row_hash: str, moment: datetime
) -> Checkpoint:
    made_at = moment.astimezone(UTC).isoformat()
    signature = signer.sign(checkpoint_payload(tenant_id, seq, row_hash, made_at))
    return Checkpoint(tenant_id, seq, row_hash, made_at, signer.key_id, signature)


def event(checkpoint: Checkpoint) -> AuditCheckpoint:
    c = checkpoint
    return AuditCheckpoint(
        tenant_id=c.tenant_id,
        payload=AuditCheckpointPayload(
            seq=c.seq,
            row_hash=c.row_hash,
            made_at=c.made_at,
            key_id=c.key_id,
            signature=c.signature,
        ),
    )


async def stored(tx: Transaction, tenant_id: str) -> list[Checkpoint]:
    """The tenant's checkpoints, oldest first."""
    rows = await tx.fetchall(CHECKPOINTS, (tenant_id,))
    return [
        Checkpoint(tenant_id, int(s), str(h), str(m), str(k), str(sig)) for s, h, m, k, sig in rows
    ]


def _row(c: Checkpoint) -> tuple[str, int, str, str, str, str]:
    return (c.tenant_id, c.seq, c.row_hash, c.made_at, c.key_id, c.signature)
