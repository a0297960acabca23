"""A request's work per data source, recorded before and after (issue 13; docs/rules.md).

Access and portability (POPIA s23; GDPR art 15, 20) read every source;
rectification (POPIA s24; GDPR art 16) and erasure (POPIA s24, s14; GDPR art 17)
change each source in that source's own transaction. A verified request is
*planned* by its handler: one ``dsr_steps`` row per source, ``pending``, in the
batch's transaction. The ``StepRunner`` then, for each step:

1. **before**, in privacyops' store: the request is locked and the step claimed
   (``running``, one more attempt); for an erasure not yet started, the opt-out
   is kept as suppression entries now, while the contact points still exist;
2. in the source's own transaction: the step's reads or changes;
3. **after**, in privacyops' store: the step ``done`` with what it did, and what
   it leaves there (restrictions, deferred erasures, audit, downstream events).
   When every step of the round is ``done`` or ``failed`` the request is answered:
   the outcome and the subject's answer wait for every source.

An unavailable source (``RetryableError``) puts the step back to ``pending``,
due again after the next of the retry tiers' delays (``retry_delays_ms``; the last
one repeats), so the request waits and resumes where it stopped when the source
is back. A refusal (``PermanentError``: permission denied) fails the step with its
reason, and the answer says what was not done. A step left ``running`` by a
crashed process is claimed again after ``handler_timeout_s``. Re-running a step is
harmless (``workers.dsr.erasure``): no double erasure, no step skipped. For the
embedded source, steps 2 and 3 are one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from config.datamap import EMBEDDED, DataMap
from infra.runtime.worker import Effects, Sink, announce
from infra.sources import Sources
from infra.store import Store, Transaction
from messages.dsr import RectificationDetails, RequestKind
from messages.errors import HandlerCrashed, PermanentError, PrivacyOpsError, RetryableError
from workers.consent.tables import refused_marketing
from workers.dsr import rights, rounds
from workers.dsr.erasure import Holds, load_accounts
from workers.dsr.requests import Request, load
from workers.dsr.rules import READING, local_date

if TYPE_CHECKING:
    from workers.dsr.handlers import DsrWorker

log = structlog.get_logger("privacyops.dsr.steps")

STEP_INSERT = (
    "INSERT INTO dsr_steps (tenant_id, request_id, round, source, status, attempts, next_at)"
    " VALUES (?, ?, ?, ?, 'pending', 0, ?)"
    " ON CONFLICT (tenant_id, request_id, round, source) DO NOTHING"
)
STEPS_OF = (
    "SELECT source, status, attempts, next_at, started_at, outcome, error FROM dsr_steps"
    " WHERE tenant_id = ? AND request_id = ? AND round = ? ORDER BY source"
)
WAITING = (
    "SELECT DISTINCT tenant_id, request_id, round FROM dsr_steps"
    " WHERE (status = 'pending' AND next_at <= ?) OR (status = 'running' AND started_at <= ?)"
    " LIMIT ?"
)
STEP_UPDATE = (
    "UPDATE dsr_steps SET status = ?, attempts = ?, next_at = ?, started_at = ?,"
    " finished_at = ?, outcome = ?, error = ? WHERE tenant_id = ? AND request_id = ?"
    " AND round = ? AND source = ?"
)
#: Kinds whose work is done per data source.
SOURCE_KINDS = frozenset(
    {RequestKind.ACCESS, RequestKind.PORTABILITY, RequestKind.ERASURE, RequestKind.RECTIFICATION}
)


def sources_for(datamap: DataMap, request: Request) -> list[str]:
    """The sources a request's steps run on."""
    if request.kind is RequestKind.PORTABILITY:
        return sorted(
            {t.data_source for t in datamap.tables.values() if t.provided_by_subject}
        ) or [EMBEDDED]
    details = request.details
    if isinstance(details, RectificationDetails):
        found = {datamap.correctable(c.field) for c in details.corrections}
        return sorted({datamap.source_of(f[0]) for f in found if f is not None}) or [EMBEDDED]
    return datamap.sources()


def plan(effects: Effects, request_id: str, round_: int, sources: list[str]) -> None:
    """Record the steps, pending, in the caller's transaction (the "before" of the round)."""
    for source in sources:
        effects.write(
            STEP_INSERT, (effects.tenant_id, request_id, round_, source, effects.now.isoformat())
        )
    effects.audit("dsr_steps_planned", None, request_id=request_id, round=round_, sources=sources)


@dataclass
class Step:
    tenant_id: str
    request_id: str
    round: int
    source: str
    status: str
    attempts: int
    next_at: str
    started_at: str | None
    outcome: dict[str, Any] | None
    error: str | None
    #: Set when claimed: the step reads (access, portability) rather than changes.
    reads: bool = False

    def write(self, effects: Effects, now: datetime) -> None:
        finished = now.isoformat() if self.status in ("done", "failed") else None
        effects.write(
            STEP_UPDATE,
            (
                self.status,
                self.attempts,
                self.next_at,
                self.started_at,
                finished,
                json.dumps(self.outcome, default=str) if self.outcome is not None else None,
                self.error,
                self.tenant_id,
                self.request_id,
                self.round,
                self.source,
            ),
        )

    def view(self) -> dict[str, Any]:
        """Progress as ``dsr show`` prints it (no personal data: counts, tables, reasons)."""
        return {
            "round": self.round,
            "source": self.source,
            "status": self.status,
            "attempts": self.attempts,
            "next_at": self.next_at if self.status == "pending" else None,
            "error": self.error,
            "outcome": self.outcome,
        }


async def steps_of(tx: Transaction, tenant: str, request_id: str, round_: int) -> list[Step]:
    rows = await tx.fetchall(STEPS_OF, (tenant, request_id, round_))
    return [
        Step(tenant, request_id, round_, src, st, int(n), nxt, started, _json(out), err)
        for src, st, n, nxt, started, out, err in rows
    ]


async def progress(tx: Transaction, tenant: str, request_id: str) -> list[dict[str, Any]]:
    """Every step of a request, every round, for ``dsr show``."""
    rows = await tx.fetchall(
        "SELECT DISTINCT round FROM dsr_steps WHERE tenant_id = ? AND request_id = ?",
        (tenant, request_id),
    )
    found: list[dict[str, Any]] = []
    for (round_,) in sorted(rows):
        found += [s.view() for s in await steps_of(tx, tenant, request_id, int(round_))]
    return found


def _json(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


class StepRunner:
    """Runs due steps: woken after a batch planned some, and every ``outbox_poll_s``."""

    def __init__(self, worker: DsrWorker, store: Store, sources: Sources, sink: Sink | None):
        self.worker = worker
        self.store = store
        self.sources = sources
        self.sink = sink
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dsr:steps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        poll = self.worker.settings.outbox_poll_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            self._wake.clear()
            try:
                await self.run_due(datetime.now(UTC))
            except PrivacyOpsError as exc:  # privacyops' own store: logged, tried again
                log.warning("dsr_steps_failed", error_type=exc.code)

    async def run_due(self, now: datetime, limit: int = 100) -> int:
        """Run every step due now; the number of rounds looked at."""
        stale = now - timedelta(seconds=self.worker.settings.handler_timeout_s)
        async with self.store.transaction() as tx:
            due = await tx.fetchall(WAITING, (now.isoformat(), stale.isoformat(), limit))
        for tenant, request_id, round_ in due:
            await self.run_round(str(tenant), str(request_id), int(round_))
        return len(due)

    async def run_round(self, tenant: str, request_id: str, round_: int) -> None:
        """Claim, run and record the round's due steps one by one, then answer."""
        while True:
            claimed = await self._claim(tenant, request_id, round_)
            if not claimed:
                return
            try:
                await self._run(claimed)
            except RetryableError as exc:
                await self._settle(claimed, exc)
                return
            except PermanentError as exc:
                await self._settle(claimed, exc)
            except Exception as exc:  # noqa: BLE001 - a bug: this step fails, the runner lives on
                log.error("dsr_step_crashed", request_id=request_id, error_type=type(exc).__name__)
                await self._settle(claimed, HandlerCrashed(f"step crashed: {type(exc).__name__}"))

    async def _claim(self, tenant: str, request_id: str, round_: int) -> list[Step]:
        """Before: the next due step (every due step, for a read) marked ``running``."""
        now = datetime.now(UTC)
        stale = (now - timedelta(seconds=self.worker.settings.handler_timeout_s)).isoformat()
        effects = self._effects(tenant, request_id, now)
        async with self.store.transaction() as tx:
            request = await load(tx, tenant, request_id)
            steps = await steps_of(tx, tenant, request_id, round_)
            due = [
                s
                for s in steps
                if (s.status == "pending" and s.next_at <= now.isoformat())
                or (s.status == "running" and (s.started_at or "") <= stale)
            ]
            if request is None or request.subject_ref is None or not due:
                return []
            claimed = due if request.kind in READING else due[:1]
            for step in claimed:
                step.reads = request.kind in READING
            try:
                if request.kind is RequestKind.ERASURE and round_ == 0:
                    await self._keep_opt_outs(tx, effects, request.subject_ref, claimed, now)
            except RetryableError as exc:  # the contact points' source is down: wait
                for step in claimed:
                    step.attempts += 1
                    self._failed(step, exc, effects, now)
                claimed = []
            for step in claimed:
                step.status, step.attempts = "running", step.attempts + 1
                step.started_at = now.isoformat()
                step.write(effects, now)
            tx.stage_all(effects.writes)
        announce(self.sink, effects)
        return claimed

    async def _keep_opt_outs(
        self, tx: Transaction, effects: Effects, subject: str, claimed: list[Step], now: datetime
    ) -> None:
        """Before any step erases: the subject's digest suppressed at once; the contact values'
        digests before the step of the source holding the contact points (idempotent)."""
        datamap, tenant = self.worker.datamap, effects.tenant_id
        contacts: list[str] = []
        source = datamap.source_of("contact_points")
        if "contact_points" in datamap.tables and any(s.source == source for s in claimed):
            async with self.sources.transaction(source, within=tx) as src:
                rows = await src.fetchall(
                    "SELECT value FROM contact_points WHERE tenant_id = ? AND subject_ref = ?",
                    (tenant, subject),
                )
            contacts = [str(value) for (value,) in rows]
        never_ask = await refused_marketing(tx, tenant, subject)
        today = local_date(now, self.worker.zone(tenant))  # the 3 years count from a local date
        self.worker.eraser.keep_opt_outs(effects, subject, today, contacts, refused=never_ask)

    async def _run(self, claimed: list[Step]) -> None:
        """The step in its source, then after: recorded (and the request answered when last).

        A change on another source runs before privacyops' "after" transaction opens, so a
        slow platform database never holds privacyops' store; on the embedded source the
        change and its record are one transaction. Reads (access) gather inside it.
        """
        first = claimed[0]
        now = datetime.now(UTC)
        effects = self._effects(first.tenant_id, first.request_id, now)
        outside = first.source != EMBEDDED and not first.reads
        if outside:
            async with self.store.transaction() as tx:
                snapshot = await load(tx, first.tenant_id, first.request_id)
            if snapshot is None or snapshot.subject_ref is None:
                return
            first.outcome = await self._change(None, snapshot, first, effects)
        async with self.store.transaction() as tx:
            request = await load(tx, first.tenant_id, first.request_id)
            if request is None or request.subject_ref is None:
                return
            await self.worker.refresh(tx, request)
            if request.kind in READING:
                status, outcome, why = await self.worker.export(
                    tx, request, request.subject_ref, effects
                )
                for step in claimed:
                    step.status, step.error = "done", None
                    step.outcome = {"answer": [status.value, outcome, why]}
                    step.write(effects, now)
            else:
                if not outside:
                    first.outcome = await self._change(tx, request, first, effects)
                first.status, first.error = "done", None
                first.write(effects, now)
            await self._answer_if_done(tx, request, claimed, effects)
            tx.stage_all(effects.writes)
        announce(self.sink, effects)
        log.info("dsr_step_done", request_id=first.request_id, source=first.source)

    async def _change(
        self, tx: Transaction | None, request: Request, step: Step, effects: Effects
    ) -> dict[str, Any]:
        """Rectify or erase in the step's source: its own transaction (the embedded: ``tx``)."""
        subject = request.subject_ref
        assert subject is not None
        datamap = self.worker.datamap
        tables = datamap.tables_of(step.source)
        if isinstance(request.details, RectificationDetails):
            async with self.sources.transaction(step.source, within=tx) as src:
                return await self._rectify(src, request, step.source, effects)
        holds = await self._holds(tx, request.tenant_id, subject, effects.now)
        async with self.sources.transaction(step.source, within=tx) as src:
            result = await self.worker.eraser.erase_in_source(
                src, request.tenant_id, subject, tables, holds
            )
        self.worker.eraser.record(effects, subject, request.request_id, tables, result, holds)
        return result.summary()

    async def _rectify(
        self, tx: Transaction, request: Request, source: str, effects: Effects
    ) -> dict[str, Any]:
        """One source's share of a rectification, in that source's transaction ``tx``."""
        details = request.details
        assert isinstance(details, RectificationDetails)
        assert request.subject_ref is not None
        first = sources_for(self.worker.datamap, request)[0]  # also refuses the uncorrectable
        result = await rights.rectify(
            tx,
            effects,
            self.worker.datamap,
            self.worker.key,
            request.subject_ref,
            details.corrections,
            insist=details.insist,
            request_id=request.request_id,
            source=source,
            uncorrectable_here=source == first,
        )
        tables = sorted(result.tables)
        return {"applied": result.applied, "refused": result.refused, "tables": tables}

    async def _holds(
        self, tx: Transaction | None, tenant: str, subject: str, now: datetime
    ) -> Holds:
        """The holds, evaluated on the accounts as their source holds them now."""
        eraser = self.worker.eraser
        today = local_date(now, self.worker.zone(tenant))  # a hold ends on the tenant's date
        if "accounts" not in self.worker.datamap.tables:
            return eraser.holds(tenant, [], today)
        source = self.worker.datamap.source_of("accounts")
        async with self.sources.transaction(source, within=tx) as src:
            accounts = await load_accounts(src, tenant, subject)
        return eraser.holds(tenant, accounts, today)

    async def _answer_if_done(
        self, tx: Transaction, request: Request, claimed: list[Step], effects: Effects
    ) -> None:
        """The answer waits for every source: given once no step of the round is left."""
        round_ = claimed[0].round
        stored = await steps_of(tx, request.tenant_id, request.request_id, round_)
        steps = {s.source: s for s in stored} | {s.source: s for s in claimed}
        if any(s.status in ("pending", "running") for s in steps.values()):
            return
        await rounds.answer_round(self.worker, tx, request, round_, list(steps.values()), effects)
        request.save(effects, "")

    async def _settle(self, claimed: list[Step], exc: PrivacyOpsError) -> None:
        """After a failed attempt: back to pending on the next tier, or failed for good."""
        now = datetime.now(UTC)
        first = claimed[0]
        effects = self._effects(first.tenant_id, first.request_id, now)
        retry = isinstance(exc, RetryableError)
        async with self.store.transaction() as tx:
            request = await load(tx, first.tenant_id, first.request_id)
            if request is not None and not retry:
                await self.worker.refresh(tx, request)
            for step in claimed:
                self._failed(step, exc, effects, now)
            if not retry and request is not None:
                await self._answer_if_done(tx, request, claimed, effects)
            tx.stage_all(effects.writes)
        announce(self.sink, effects)

    def _failed(self, step: Step, exc: PrivacyOpsError, effects: Effects, now: datetime) -> None:
        """A failed attempt: pending again after the next retry tier's delay (the last one
        repeats), or failed for good with the reason (no personal data in it)."""
        retry = isinstance(exc, RetryableError)
        delays = self.worker.settings.retry_delays_ms
        delay = delays[max(min(step.attempts, len(delays)), 1) - 1] / 1000
        step.status = "pending" if retry else "failed"
        step.next_at = (now + timedelta(seconds=delay)).isoformat()
        step.error = f"{exc.code}: {exc}"
        step.write(effects, now)
        effects.audit(
            "dsr_step_failed",
            None,
            request_id=step.request_id,
            source=step.source,
            error_type=exc.code,
            retry=retry,
        )

    def _effects(self, tenant: str, request_id: str, now: datetime) -> Effects:
        return Effects.standalone(
            "dsr",
            tenant,
            actor="dsr:steps",
            correlation_id=request_id,
            now=now,
            sealer=self.worker.keys.notice,
        )
