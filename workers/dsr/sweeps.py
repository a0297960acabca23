"""Periodic sweeps of the DSR worker, also run by ``privacyops holds sweep`` from cron.

* Deadlines: requests due within 7 days, and overdue ones, are flagged once per
  state as log events and as a ``dsr.overdue`` message for ops (GDPR art 12(3)),
  counting in the tenant's local dates. A POPIA access request not answered in
  time counts as refused (PAIA s58): the subject is told so, with their remedies
  (``dsr_deemed_refused``).
* Holds: a deferred erasure runs again when its hold expires or its open
  account has closed; once nothing is held, the request is completed.
* Privacyops' own records of an erased subject: notices still on their way at
  the erasure are reduced once delivered; the files of expired or revoked
  export packages are deleted (``workers.dsr.forget``).
* Steps waiting on a data source (``workers/dsr/steps.py``) run when due: the
  running service does so by itself; ``privacyops holds sweep`` does it for cron.
* Restrictions whose lifting was announced are lifted after the notice period
  (POPIA s14(8)), and the recipients are told (``subject.restriction_lifted``,
  GDPR art 19).

Sweeps read across tenants (they are the system's own bookkeeping) but every
effect they record is scoped to one tenant and one subject.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from infra.keys import Sealer
from infra.runtime.tables import NOTICE_FORGET
from infra.runtime.worker import Effects, Sink, announce, commit_effects
from infra.store import Store, Transaction
from messages.dsr import DsrOverdue, DsrOverduePayload, Regime, RequestKind
from workers.dsr import replies, steps
from workers.dsr.erasure import ErasureResult
from workers.dsr.forget import FORGOTTEN, forget_subject
from workers.dsr.recipients import tell_lifted
from workers.dsr.requests import Request, load
from workers.dsr.rules import LATEST_ZONE_AHEAD, Status, deadline_state, due_locally, local_date

if TYPE_CHECKING:
    from workers.dsr.handlers import DsrWorker

OPEN_REQUESTS = (
    "SELECT tenant_id, request_id, kind, regime, status, due_on, deadline_flag FROM dsr_requests"
    " WHERE status NOT IN ('completed', 'partially_completed', 'refused')"
)
DUE_ERASURES = (
    "SELECT d.tenant_id, d.subject_ref, d.request_id, min(d.run_after) FROM deferred_erasures d"
    " WHERE (d.run_after <= ? OR d.run_after IS NULL) AND NOT EXISTS (SELECT 1 FROM dsr_steps s"
    " WHERE s.tenant_id = d.tenant_id AND s.request_id = d.request_id"
    " AND s.status IN ('pending', 'running'))"
    " GROUP BY d.tenant_id, d.subject_ref, d.request_id"
    " ORDER BY CASE WHEN min(d.run_after) IS NULL THEN 1 ELSE 0 END, min(d.run_after) LIMIT ?"
)
OPEN_ACCOUNTS = (
    "SELECT count(*) FROM accounts WHERE tenant_id = ? AND subject_ref = ? AND status = 'open'"
)
LAST_ROUND = "SELECT max(round) FROM dsr_steps WHERE tenant_id = ? AND request_id = ?"
FOLLOWUPS_DONE = (
    "SELECT f.tenant_id, f.notice_id, f.subject_ref FROM erasure_followups f"
    " JOIN notification_outbox o ON o.tenant_id = f.tenant_id AND o.notice_id = f.notice_id"
    " WHERE o.status IN ('sent', 'failed')"
)
EXPIRED_PACKAGES = (
    "SELECT tenant_id, request_id, path FROM dsr_packages WHERE path != '' AND expires_at <= ?"
)
DUE_LIFTS = (
    "SELECT tenant_id, subject_ref, scope FROM restrictions"
    " WHERE lift_after IS NOT NULL AND lift_after <= ?"
)


@dataclass(frozen=True)
class SweepReport:
    flagged: int
    erasures_run: int
    lifted: int
    notices_reduced: int = 0
    packages_deleted: int = 0
    steps_resumed: int = 0


async def run_all(worker: DsrWorker, store: Store, sink: Sink | None, now: datetime) -> SweepReport:
    if worker.runner is None:  # a command (``holds sweep``), not a running service
        worker.attach(store, sink)
    return SweepReport(
        flagged=await sweep_deadlines(worker, store, sink, now),
        erasures_run=await sweep_holds(worker, store, sink, now),
        lifted=await sweep_lifts(worker, store, sink, now),
        notices_reduced=await sweep_followups(store, now),
        packages_deleted=await sweep_packages(store, sink, now),
        steps_resumed=await worker.runner.run_due(now) if worker.runner else 0,
    )


async def sweep_followups(store: Store, now: datetime) -> int:
    """Reduce the delivered notices of erased subjects (``workers.dsr.forget``)."""
    async with store.transaction() as tx:
        done = await tx.fetchall(FOLLOWUPS_DONE)
        for tenant, notice_id, ref in done:
            tx.stage(NOTICE_FORGET, (FORGOTTEN, ref, tenant, notice_id))
            tx.stage(
                "DELETE FROM erasure_followups WHERE tenant_id = ? AND notice_id = ?",
                (tenant, notice_id),
            )
    return len(done)


async def sweep_packages(store: Store, sink: Sink | None, now: datetime) -> int:
    """Delete the files of expired or revoked export packages (nothing else ever does)."""
    async with store.transaction() as tx:
        rows = await tx.fetchall(EXPIRED_PACKAGES, (now.isoformat(),))
    deleted: list[Effects] = []
    for tenant, request_id, path in rows:
        await asyncio.to_thread(Path(path).unlink, missing_ok=True)
        effects = Effects.standalone("dsr", tenant, actor="sweep:packages", now=now)
        effects.write(
            "UPDATE dsr_packages SET path = '' WHERE tenant_id = ? AND request_id = ?",
            (tenant, request_id),
        )
        effects.audit("export_package_deleted", None, request_id=request_id)
        deleted.append(effects)
    if deleted:
        await commit_effects(store, sink, *deleted)
    return len(deleted)


async def sweep_deadlines(worker: DsrWorker, store: Store, sink: Sink | None, now: datetime) -> int:
    flagged: list[Effects] = []
    async with store.transaction() as tx:
        await tx.lock("dsr:sweep:deadlines")  # each state flagged once, however many processes
        for tenant, rid, kind, regime, status, due, flag in await tx.fetchall(OPEN_REQUESTS):
            state = deadline_state(date.fromisoformat(due), local_date(now, worker.zone(tenant)))
            if state is None or state == flag:
                continue
            effects = Effects.standalone(
                "dsr",
                tenant,
                actor="sweep:deadlines",
                correlation_id=rid,
                now=now,
                sealer=worker.keys.notice,
            )
            effects.write(
                "UPDATE dsr_requests SET deadline_flag = ? WHERE tenant_id = ? AND request_id = ?",
                (state, tenant, rid),
            )
            deemed = state == "overdue" and kind == RequestKind.ACCESS and regime == Regime.POPIA
            effects.emit(
                DsrOverdue(
                    tenant_id=tenant,
                    correlation_id=rid,
                    payload=DsrOverduePayload(
                        request_id=rid,
                        kind=RequestKind(kind),
                        status=status,
                        due_on=date.fromisoformat(due),
                        state=state,
                        deemed_refused=deemed,
                    ),
                )
            )
            effects.audit(f"dsr_{state}", None, request_id=rid, due_on=due, status=status)
            if deemed:
                await _deemed_refused(worker, tx, effects, tenant, rid, worker.keys.notice)
            tx.stage_all(effects.writes)
            flagged.append(effects)
    announce(sink, *flagged)
    return len(flagged)


async def _deemed_refused(
    worker: DsrWorker, tx: Transaction, effects: Effects, tenant: str, rid: str, sealer: Sealer
) -> None:
    """PAIA s58: an access request not answered in time is refused; tell the subject so."""
    request = await load(tx, tenant, rid)
    if request is None:
        return
    async with worker.source_tx("contact_points", tx) as contacts:
        await replies.refresh(contacts, request, sealer)
    request.note("deemed refused (PAIA s58): the subject was told, with their remedies")
    replies.notify(
        effects,
        request,
        "dsr_deemed_refused",
        {"due_on": request.due_on.isoformat(), "regime": request.regime.value},
    )
    effects.audit("dsr_deemed_refused", request.subject_ref, request_id=rid)
    request.save(effects, "")


async def sweep_holds(
    worker: DsrWorker, store: Store, sink: Sink | None, now: datetime, limit: int = 500
) -> int:
    """Deferred erasures whose hold expired (or whose open debts may have closed) run again:
    a new round of steps, one per data source (``workers/dsr/steps.py``), run now."""
    async with store.transaction() as tx:
        horizon = (now + LATEST_ZONE_AHEAD).date().isoformat()
        due = await tx.fetchall(DUE_ERASURES, (horizon, limit))
    rounds: list[tuple[str, str, int]] = []
    for tenant, subject, request_id, run_after in due:
        if not due_locally(run_after, now, worker.zone(tenant)):
            continue
        if run_after is None and await _debts_open(worker, store, tenant, subject):
            continue
        effects = Effects.standalone(
            "dsr", tenant, actor="sweep:holds", correlation_id=request_id, now=now
        )
        async with store.transaction() as tx:
            await tx.lock(f"dsr:request:{tenant}:{request_id}")
            row = await tx.fetchone(LAST_ROUND, (tenant, request_id))
            round_ = int(row[0]) + 1 if row and row[0] is not None else 1
            steps.plan(effects, request_id, round_, worker.datamap.sources())
            tx.stage_all(effects.writes)
        announce(sink, effects)
        rounds.append((tenant, request_id, round_))
    assert worker.runner is not None
    for tenant, request_id, round_ in rounds:
        await worker.runner.run_round(tenant, request_id, round_)
    return len(rounds)


async def _debts_open(worker: DsrWorker, store: Store, tenant: str, subject: str) -> bool:
    """Whether the subject still has an open account, as the accounts' source holds it."""
    async with store.transaction() as tx, worker.source_tx("accounts", tx) as accounts:
        row = await accounts.fetchone(OPEN_ACCOUNTS, (tenant, subject))
    return bool(row and row[0])


async def deferred_done(
    worker: DsrWorker, tx: Transaction, request: Request, result: ErasureResult, effects: Effects
) -> None:
    """A deferred erasure's round is over: once nothing is held the request is completed and
    told, and privacyops' own records of the subject are reduced."""
    subject = request.subject_ref
    assert subject is not None
    if result.complete and request.status is Status.PARTIALLY_COMPLETED:
        # The contact points are gone: the answer goes to the address kept with it.
        request.move(Status.COMPLETED, "deferred erasure ran after the holds expired")
        request.outcome = {**(request.outcome or {}), "deferred": result.summary()}
        context = worker.answer(request, Status.COMPLETED, result.summary(), "held data erased")
        replies.notify(effects, request, "dsr_completed", context)
    if result.complete:
        await forget_subject(tx, effects, worker.key, subject, request)


async def sweep_lifts(worker: DsrWorker, store: Store, sink: Sink | None, now: datetime) -> int:
    lifted: list[Effects] = []
    async with store.transaction() as tx:
        await tx.lock("dsr:sweep:lifts")
        for tenant, subject, scope in await tx.fetchall(DUE_LIFTS, (now.isoformat(),)):
            effects = Effects.standalone("dsr", tenant, actor="sweep:restrictions", now=now)
            effects.write(
                "DELETE FROM restrictions WHERE tenant_id = ? AND subject_ref = ? AND scope = ?",
                (tenant, subject, scope),
            )
            effects.audit("restriction_lifted", subject, scope=scope)
            tell_lifted(effects, worker.datamap, subject, [scope])
            tx.stage_all(effects.writes)
            lifted.append(effects)
    announce(sink, *lifted)
    return len(lifted)
