"""Data-subject request worker: the six rights, the verification gate and the deadlines.

Rules enforced (docs/rules.md "Data-subject requests", "Identity", "Deadlines",
"Answers", "Erasure and retention holds"; pure rules in ``workers/dsr/rules.py``):

* Every request is answered within one calendar month of receipt (GDPR art
  12(3); the privacy policy), a POPIA access request within 30 days when that is
  earlier (PAIA s56), counted in the tenant's local dates; an extension is
  decided before the due date by this worker's clock, with reasons, and told to
  the subject (``dsr.extended``); POPIA's other rights get none.
* Access (POPIA s23; GDPR art 15) and portability (GDPR art 20) disclose data,
  erasure (POPIA s24; GDPR art 17) and rectification (POPIA s24; GDPR art 16)
  change it, and lifting a restriction (POPIA s14(8)) ends a protection: all of
  them wait for a verified identity (POPIA s19, s23). Until ``dsr.verified``
  arrives the request is ``awaiting_verification`` and nothing is touched;
  ``dsr.verified`` records who verified and how. A request whose reference and
  ID number name different people is refused before anything is read.
* Erasure yields to retention duties: see ``workers.dsr.erasure``.
* The data lives in the data sources the data map names (issue 13): once verified,
  access, portability, rectification and erasure are planned as one step per source
  and carried out by the step runner (``workers.dsr.steps``), each in its source's
  own transaction, recorded before and after; the answer waits for every source
  (``workers.dsr.rounds``).
* Every step is a stored transition with what, when and why; every outcome is
  told to the subject through the notification outbox, never with the data
  itself (the access package goes by an expiring, single-use code, carried to
  the subject only in the notice's sealed context). A final answer says what
  was done, what was kept and why, and how to complain (``workers.dsr.answers``).
* Restrictions, their lifting and objections reach the recipients
  (``workers.dsr.recipients``).
* Authentication (docs/rules.md; POPIA s19): ``identity_verified: true`` is honoured
  only from a publisher key allowed to assert it (``Effects.may_assert_verification``);
  the runtime refuses ``dsr.verified`` from any other key.

DSR traffic is small and each request reads across many tables, so handlers
read through the batch's transaction as they go (``prepare`` keeps it) rather
than preloading the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, ClassVar

from config import tenants as tenant_config
from config.datamap import EMBEDDED, load_datamap, load_retention
from config.settings import Settings
from infra.keys import Keys
from infra.runtime.worker import Effects, Resources, Sink, Worker, handles
from infra.sources import Sources
from infra.store import Store, Transaction
from messages.dsr import (
    DsrExtended,
    DsrRequested,
    DsrVerified,
    ObjectionDetails,
    PortabilityDetails,
    PortabilityHandover,
    PortabilityHandoverPayload,
    RequestKind,
    RestrictionDetails,
    SubjectIdentifiers,
)
from messages.errors import NotYetKnown, RetryableError, RuleViolation
from workers.dsr import answers, package, replies, rights, steps, sweeps
from workers.dsr.erasure import Eraser
from workers.dsr.forget import forget_subject
from workers.dsr.gather import gather
from workers.dsr.recipients import tell_objected, tell_restricted
from workers.dsr.requests import Request, load
from workers.dsr.rules import (
    NEEDS_VERIFICATION,
    Status,
    deadline_state,
    due_on,
    extended_due_on,
    local_date,
)
from workers.dsr.tables import DSR, PACKAGE_UPSERT

Outcome = tuple[Status, dict[str, Any], str]


class DsrWorker(Worker):
    """Handles ``dsr.requested``, ``dsr.verified`` and ``dsr.extended``; sweeps deadlines."""

    name: ClassVar[str] = "dsr"
    schema = DSR
    periodic: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.datamap = load_datamap(settings.datamap_path)
        self.retention = load_retention(settings.retention_path)
        self.keys = Keys.from_settings(settings)
        #: Keyed digests (suppression entries, audit before/after): never the export key.
        self.key = self.keys.digest.key
        self.eraser = Eraser(self.datamap, self.retention, self.key)
        self.directory = tenant_config.from_settings(settings)
        self._tx: Transaction | None = None
        self.sources: Sources | None = None
        self.runner: steps.StepRunner | None = None

    async def open(self, resources: Resources) -> None:
        """The data sources (opened on first use) and the step runner (``workers/dsr/steps.py``)."""
        self.attach(resources.store, resources.sink).start()

    def attach(self, store: Store, sink: Sink | None) -> steps.StepRunner:
        """Sources and a step runner on ``store`` (the service's, or a command's)."""
        self.sources = Sources(self.settings, store)
        self.runner = steps.StepRunner(self, store, self.sources, sink)
        return self.runner

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        if self.sources is not None:
            await self.sources.close()

    def committed(self, batch: Sequence[Effects]) -> None:
        """A batch planned steps: run them now rather than at the next poll."""
        planned = any(sql == steps.STEP_INSERT for e in batch for sql, _ in e.writes)
        if planned and self.runner is not None:
            self.runner.wake()

    def source_tx(self, table: str, tx: Transaction) -> AbstractAsyncContextManager[Transaction]:
        """A transaction on the source holding ``table`` (the embedded one: ``tx`` itself)."""
        assert self.sources is not None, "open() or attach() runs first"
        return self.sources.transaction(self.datamap.source_of(table), within=tx)

    def zone(self, tenant_id: str) -> tzinfo:
        """The zone the tenant's legal dates are counted in (Africa/Johannesburg by default)."""
        return self.directory.zone(tenant_id, self.settings.timezone)

    def _download_link(self, tenant_id: str) -> dict[str, str]:
        """The tenant's subject download page (workers/console/download.py), once public;
        without it the notice points at the tenant's website."""
        base = self.settings.download_base_url
        return {"download_url": f"{base.rstrip('/')}/download/{tenant_id}"} if base else {}

    async def prepare(self, tx: Transaction, messages: Any) -> None:
        self._tx = tx

    def _batch_tx(self) -> Transaction:
        assert self._tx is not None, "prepare() runs before the handlers"
        return self._tx

    async def gauges(self, store: Store, now: datetime) -> dict[str, float]:
        """Open requests, and those due within 7 days or overdue, for ops."""
        async with store.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT tenant_id, due_on FROM dsr_requests"
                " WHERE status NOT IN ('completed', 'partially_completed', 'refused')"
            )
        states = Counter(
            deadline_state(date.fromisoformat(due), local_date(now, self.zone(tenant)))
            for tenant, due in rows
        )
        return {
            "requests_open": float(len(rows)),
            "requests_due_soon": float(states["due_soon"]),
            "requests_overdue": float(states["overdue"]),
        }

    async def tick(self, store: Store, sink: Sink, now: datetime) -> None:
        await sweeps.run_all(self, store, sink, now)

    # -- messages ------------------------------------------------------------------------

    @handles(DsrRequested)
    async def requested(self, m: DsrRequested, effects: Effects) -> None:
        """A right exercised: recorded, acknowledged, carried out once identity is verified."""
        tx = self._batch_tx()
        p = m.payload
        if await load(tx, m.tenant_id, p.request_id) is not None:
            effects.audit("dsr_request_repeated", None, request_id=p.request_id)
            return
        async with self.source_tx("debtors", tx) as debtors:
            subject_ref = p.subject.subject_ref or await self._lookup(
                debtors, m.tenant_id, p.subject.id_number
            )
            agree = await self._identifiers_agree(debtors, m.tenant_id, p.subject)
        zone = self.zone(m.tenant_id)
        request = Request(
            tenant_id=m.tenant_id,
            request_id=p.request_id,
            kind=p.kind,
            regime=p.regime,
            subject_ref=subject_ref,
            status=Status.RECEIVED,
            verified=self._verified_claim(p.identity_verified, p.request_id, effects),
            received_at=p.received_at,
            due_on=due_on(local_date(p.received_at, zone), p.regime, p.kind),
            reply_channel=p.reply_to.channel,
            details=p.details,
        )
        async with self.source_tx("contact_points", tx) as contacts:
            await replies.fix(contacts, request, self.keys.notice, p.subject.email)
        if p.identity_verified:  # asserted by the upstream system that sent the request
            request.verified_by, request.verification_method = "upstream", "asserted_in_request"
            request.verified_at = m.occurred_at
        request.move(Status.RECEIVED, "request received")
        self._notify(effects, request, "dsr_received", {"due_on": request.due_on.isoformat()})
        effects.audit(
            "dsr_received", subject_ref, request_id=p.request_id, kind=p.kind, due_on=request.due_on
        )
        if not agree:
            self._refuse_mismatch(effects, request)
        elif self._needs_verification(request) and not request.verified:
            request.move(
                Status.AWAITING_VERIFICATION,
                f"identity must be verified before {p.kind.value} is carried out",
            )
            self._notify(effects, request, "dsr_verification_needed", {})
        else:
            await self._execute(tx, request, effects)
        request.save(effects, str(m.message_id))

    @handles(DsrVerified)
    async def verified(self, m: DsrVerified, effects: Effects) -> None:
        """docs/rules.md "Identity": a request waiting for a verified identity runs now."""
        tx = self._batch_tx()
        request = await self._existing(tx, m.tenant_id, m.payload.request_id)
        if request.status is not Status.AWAITING_VERIFICATION:
            effects.audit(
                "dsr_verification_ignored",
                request.subject_ref,
                request_id=request.request_id,
                status=request.status,
            )
            return
        request.verified = True
        request.verified_by = m.payload.verified_by
        request.verification_method = m.payload.method
        request.verified_at = m.payload.verified_at
        effects.audit(
            "dsr_identity_verified",
            request.subject_ref,
            request_id=request.request_id,
            verified_by=m.payload.verified_by,
            method=m.payload.method,
            verified_at=m.payload.verified_at,
        )
        await self._execute(tx, request, effects)
        request.save(effects, str(m.message_id))

    @handles(DsrExtended)
    async def extended(self, m: DsrExtended, effects: Effects) -> None:
        """GDPR art 12(3) / PAIA s57: once, before the due date, with reasons told."""
        p = m.payload
        request = await self._existing(self._batch_tx(), m.tenant_id, p.request_id)
        if request.status in (Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.REFUSED):
            raise RuleViolation("the request is already answered; nothing to extend")
        if request.extended:
            raise RuleViolation("the request was already extended once")
        today = local_date(effects.now, self.zone(m.tenant_id))  # our clock, not the sender's
        new_due = extended_due_on(request.regime, request.kind, request.due_on, p.months, today)
        request.note(f"deadline extended from {request.due_on} to {new_due}: {p.reason}")
        request.due_on, request.extended = new_due, True
        self._notify(
            effects, request, "dsr_extended", {"due_on": new_due.isoformat(), "reason": p.reason}
        )
        effects.audit("dsr_extended", request.subject_ref, request_id=p.request_id, due_on=new_due)
        request.save(effects, str(m.message_id))

    # -- carrying out a right ------------------------------------------------------------

    async def _execute(self, tx: Transaction, request: Request, effects: Effects) -> None:
        reason = "identity verified" if request.verified else "no verification needed"
        request.move(Status.IN_PROGRESS, reason)
        if request.subject_ref is None:
            status, outcome, why = self._nothing_held(request)
        elif request.kind in steps.SOURCE_KINDS:  # carried out per data source, then answered
            steps.plan(effects, request.request_id, 0, steps.sources_for(self.datamap, request))
            return
        else:
            status, outcome, why = await self._carry_out(tx, request, request.subject_ref, effects)
        await self.complete(tx, request, (status, outcome, why), effects)

    async def complete(
        self, tx: Transaction, request: Request, result: Outcome, effects: Effects
    ) -> None:
        """The answer: what was done, kept and why; an erased subject's own records reduced."""
        status, outcome, why = result
        request.move(status, why)
        request.outcome = outcome
        kind = "dsr_refused" if status is Status.REFUSED else "dsr_completed"
        self._notify(effects, request, kind, self.answer(request, status, outcome, why))
        effects.audit(
            "dsr_answered",
            request.subject_ref,
            request_id=request.request_id,
            kind=request.kind,
            status=status,
        )
        erased = request.kind is RequestKind.ERASURE and status is Status.COMPLETED
        if erased and request.subject_ref is not None:  # nothing held: forget our own records
            await forget_subject(tx, effects, self.key, request.subject_ref, request)

    async def _carry_out(
        self, tx: Transaction, request: Request, subject: str, effects: Effects
    ) -> Outcome:
        details = request.details
        if isinstance(details, RestrictionDetails):
            return await self._restrict(tx, request, subject, details, effects)
        if isinstance(details, ObjectionDetails):
            outcomes = await rights.object_to(
                tx,
                effects,
                subject,
                details.purposes,
                details.grounds,
                self.settings.mandatory_purposes,
                request.request_id,
                request.received_at,
            )
            tell_objected(
                effects, self.datamap, request.request_id, subject, outcomes, request.received_at
            )
            return Status.COMPLETED, {"objections": outcomes}, "objection recorded"
        raise RuleViolation(f"details do not fit a {request.kind.value} request")

    async def export(
        self, tx: Transaction, request: Request, subject: str, effects: Effects
    ) -> Outcome:
        """Access and portability: one builder over every source; the subject gets a token,
        never the data."""
        portable = request.kind is RequestKind.PORTABILITY
        assert self.sources is not None
        data = await gather(
            self.sources, tx, self.datamap, request.tenant_id, subject, provided_only=portable
        )
        # the subject's earlier requests: this one is stored (in progress) while it runs
        data.requests = [r for r in data.requests if r["request_id"] != request.request_id]
        doc = package.document(data, self.datamap, self.retention, request.request_id, portable)
        issued = package.seal(
            package.build_zip(doc),
            self.keys.export,
            self.settings.export_dir / request.tenant_id,
            request.request_id,
            effects.now,
            timedelta(hours=self.settings.package_ttl_hours),
        )
        effects.write(
            PACKAGE_UPSERT,
            (
                request.tenant_id,
                request.request_id,
                subject,
                str(issued.path),
                package.token_digest(issued.token),
                issued.expires_at.isoformat(),
                effects.now.isoformat(),
            ),
        )
        rows = {name: len(r) for name, r in data.tables.items()}
        self._notify(
            effects,
            request,
            "dsr_package_ready",
            {
                "expires_at": issued.expires_at.isoformat(),
                "may_request_correction": True,
                "holds_data": data.holds_anything,
                **self._download_link(request.tenant_id),
            },
            sealed={"token": issued.token},  # encrypted in the outbox row, cleared once sent
        )
        effects.audit(
            "export_package_built",
            subject,
            request_id=request.request_id,
            rows=rows,
            portable=portable,
        )
        outcome: dict[str, Any] = {
            "rows": rows,
            "recipients": doc["recipients"],
            "package_expires_at": issued.expires_at.isoformat(),
        }
        details = request.details
        if isinstance(details, PortabilityDetails) and details.destination:
            outcome["handover"] = self._hand_over(
                effects, request, subject, details.destination, issued
            )
        return Status.COMPLETED, outcome, "package ready for download"

    def _hand_over(
        self,
        effects: Effects,
        request: Request,
        subject: str,
        destination: str,
        issued: package.Issued,
    ) -> str:
        """GDPR art 20(2): an integration downstream delivers the package to the organisation."""
        effects.emit(
            PortabilityHandover(
                tenant_id=request.tenant_id,
                correlation_id=request.request_id,
                payload=PortabilityHandoverPayload(
                    request_id=request.request_id,
                    subject_ref=subject,
                    destination=destination,
                    token=issued.token,
                    expires_at=issued.expires_at,
                ),
            )
        )
        effects.audit("portability_handover_queued", subject, request_id=request.request_id)
        return "queued for the named organisation (dsr.portability_handover)"

    async def _restrict(
        self,
        tx: Transaction,
        request: Request,
        subject: str,
        details: RestrictionDetails,
        effects: Effects,
    ) -> Outcome:
        if not details.lift:
            scopes = rights.restrict(
                effects, subject, details.categories, details.grounds, request.request_id
            )
            tell_restricted(
                effects,
                self.datamap,
                subject,
                scopes,
                details.grounds,
                request_id=request.request_id,
            )
            return Status.COMPLETED, {"restricted": scopes}, "processing restricted"
        notice = timedelta(hours=self.settings.restriction_lift_notice_hours)
        scopes, lift_after = await rights.schedule_lift(tx, effects, subject, notice)
        if not scopes:
            return Status.REFUSED, {}, "no restriction requested by the subject is in place"
        self._notify(
            effects,
            request,
            "restriction_lifting",
            {"scopes": scopes, "lift_after": lift_after.isoformat()},
        )
        return (
            Status.COMPLETED,
            {"lifting": scopes, "lift_after": lift_after.isoformat()},
            "subject told before the restriction is lifted",
        )

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _verified_claim(claimed: bool, request_id: str, effects: Effects) -> bool:
        """``identity_verified`` counts only from a key allowed to assert it (docs/rules.md
        "Identity"); from any other publisher the request waits for ``dsr.verified``."""
        if claimed and not effects.may_assert_verification:
            effects.audit("identity_assertion_ignored", None, request_id=request_id)
            return False
        return claimed

    @staticmethod
    def _needs_verification(request: Request) -> bool:
        lifting = isinstance(request.details, RestrictionDetails) and request.details.lift
        return request.kind in NEEDS_VERIFICATION or lifting

    @staticmethod
    def _nothing_held(request: Request) -> Outcome:
        if request.kind is RequestKind.RECTIFICATION:
            return Status.REFUSED, {}, "no record of the subject is held"
        return Status.COMPLETED, {"holds_data": False}, "no personal information is held"

    @staticmethod
    async def _identifiers_agree(
        tx: Transaction, tenant_id: str, subject: SubjectIdentifiers
    ) -> bool:
        """Given both a reference and an ID number, do they name the same debtor?"""
        if subject.subject_ref is None or subject.id_number is None:
            return True
        by_id = await tx.fetchall(
            "SELECT subject_ref FROM debtors WHERE tenant_id = ? AND id_number = ?",
            (tenant_id, subject.id_number),
        )
        if any(ref != subject.subject_ref for (ref,) in by_id):
            return False
        by_ref = await tx.fetchone(
            "SELECT id_number FROM debtors WHERE tenant_id = ? AND subject_ref = ?",
            (tenant_id, subject.subject_ref),
        )
        return by_ref is None or by_ref[0] in (None, subject.id_number)

    def answer(
        self, request: Request, status: Status, outcome: dict[str, Any], why: str
    ) -> dict[str, Any]:
        """The final notice's context: what was done, kept and why (``workers.dsr.answers``)."""
        return {
            "regime": request.regime.value,
            "reason": why,
            **answers.answer(request.kind, status.value, outcome, why, self.describe),
        }

    def describe(self, table: str) -> str:
        found = self.datamap.tables.get(table)
        return found.description.lower() if found else table

    def _refuse_mismatch(self, effects: Effects, request: Request) -> None:
        """docs/rules.md "Identity": nothing is read out or changed for two people's ids."""
        why = "the reference and the ID number in the request do not belong to the same person"
        request.move(Status.REFUSED, why)
        request.outcome = {"refused": why}
        self._notify(effects, request, "dsr_refused", self.answer(request, Status.REFUSED, {}, why))
        effects.audit(
            "dsr_identifiers_mismatch",
            request.subject_ref,
            request_id=request.request_id,
            kind=request.kind,
        )

    @staticmethod
    async def _lookup(tx: Transaction, tenant_id: str, id_number: str | None) -> str | None:
        if id_number is None:
            return None
        row = await tx.fetchone(
            "SELECT subject_ref FROM debtors WHERE tenant_id = ? AND id_number = ?",
            (tenant_id, id_number),
        )
        return str(row[0]) if row else None

    async def _existing(self, tx: Transaction, tenant_id: str, request_id: str) -> Request:
        """The stored request, with where its answers go (``workers/dsr/replies.py``)."""
        request = await load(tx, tenant_id, request_id)
        if request is None:
            raise NotYetKnown("no request with this id has been received yet")
        await self.refresh(tx, request)
        return request

    async def refresh(self, tx: Transaction, request: Request) -> None:
        """Where the request's answers go now (``workers/dsr/replies.py``), from the source
        holding the contact points; while that source is unavailable, the addresses kept
        with the request when it arrived (that copy is kept for this)."""
        try:
            async with self.source_tx("contact_points", tx) as contacts:
                await replies.refresh(contacts, request, self.keys.notice)
        except RetryableError:
            if self.datamap.source_of("contact_points") == EMBEDDED:
                raise  # privacyops' own store: the transaction itself is in trouble
            request.addresses = replies.kept(request, self.keys.notice)

    @staticmethod
    def _notify(
        effects: Effects,
        request: Request,
        kind: str,
        context: dict[str, Any],
        *,
        sealed: dict[str, str] | None = None,
    ) -> None:
        """A notice of the request, to the address fixed for it (``replies.notify``)."""
        replies.notify(effects, request, kind, context, sealed=sealed)
