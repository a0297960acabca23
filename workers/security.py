"""Security worker: alerts become incidents; a compromise is notified once, in phases.

Rules enforced (shared/DOMAIN.md section 3; pure rules in workers/incidents.py):

* Correlation: an alert joins the open incident of its fingerprint (tenant plus
  the configured fields) within ``security_window_s``: its count and timeline
  grow, nothing is notified twice. Tenants never share an incident. An alert
  delivered again, with the same or a new ``message_id``, is recognised by its
  ``alert_id`` and changes nothing.
* Every breach is documented, notified or not (GDPR art 33(5)): incident,
  alerts, a timeline of every change with its cause, subjects, locks, report.
* The operator tells the responsible party (the tenant) at once (POPIA s21(2)):
  ``incident.opened`` / ``incident.updated`` on every notable change, and
  ``incident.compromise`` the moment there are reasonable grounds to believe
  personal information was accessed or acquired by an unauthorised person
  (POPIA s22(1): personal data involvement suspected or confirmed), and again
  when an alleged compromise is confirmed.
* The regulator report record is drafted at that moment with the fields of
  DOMAIN.md 3 and the GDPR art 33(1) clock: 72 hours from awareness (the
  detection time of the alert that gave the grounds). The periodic sweep
  (``tick``) flags unsent reports due within ``security_report_warn_h`` and
  overdue ones, once per state, as audit and log events; ``incidents list``
  computes the same flag at list time, so it shows even with no worker running.
* Each affected subject gets one ``breach_notice`` per incident with the POPIA
  s22(5) parts (workers/breach_notices.py), through the notification outbox;
  a later phase (confirmation, more data categories; GDPR art 33(4), art 34)
  sends a ``breach_update`` to subjects already told, never a second notice.
  Under POPIA every compromise is notifiable whatever its severity.
* Protective action: ``account.lock`` for each account named by an
  account-takeover alert (once per account per incident); ``incident.escalated``
  to the on-call security contact when an incident reaches high severity.

Alert descriptions and the unauthorised party's identity may be personal data:
they are stored with the incident and never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID, uuid4

from config.settings import Settings
from infra.errors import NotYetKnown, UnknownMessageType
from infra.store import SqliteStore, Transaction
from infra.worker import Effects, EventSink, Worker
from messages.envelope import Envelope
from messages.security import (
    ACCOUNT_TAKEOVER,
    AccountLock,
    AccountLockPayload,
    Compromise,
    IncidentCompromise,
    IncidentCompromisePayload,
    IncidentEscalated,
    IncidentEscalatedPayload,
    IncidentFacts,
    IncidentOpened,
    IncidentOpenedPayload,
    IncidentUpdated,
    IncidentUpdatedPayload,
    PersonalData,
    SecurityAlert,
    SecurityAlertPayload,
)
from workers import breach_notices as content
from workers import incidents as rules
from workers import security_store as db
from workers.incidents import Change, Decision, Incident

FpKey = tuple[str, str]  # (tenant, fingerprint)
IncKey = tuple[str, str]  # (tenant, incident_id)


def new_incident_id() -> str:
    return f"inc-{uuid4().hex[:16]}"


@dataclass
class BatchView:
    """What the batch's handlers read, loaded by ``prepare`` and kept current by ``handle``."""

    incidents: dict[FpKey, list[Incident]] = field(default_factory=dict)
    alerts: set[tuple[str, str]] = field(default_factory=set)
    #: Subjects known per incident, with the notice phase each was told (0: not yet).
    subjects: dict[IncKey, dict[str, int]] = field(default_factory=dict)
    #: Incidents whose whole subject list is loaded (needed when a new phase begins).
    complete: set[IncKey] = field(default_factory=set)
    locked: set[tuple[str, str, str]] = field(default_factory=set)


class SecurityWorker(Worker):
    """Correlates ``security.alert`` into incidents and handles compromises."""

    name: ClassVar[str] = "security"
    handles: ClassVar[tuple[str, ...]] = ("security.alert",)
    schema: ClassVar[str] = db.SCHEMA
    periodic: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.fields = tuple(settings.security_fingerprint)
        self.window = timedelta(seconds=settings.security_window_s)
        self.oncall = settings.security_oncall_contact
        self.warn = timedelta(hours=settings.security_report_warn_h)
        self.view = BatchView()
        #: Fingerprints of the batch's messages, by message_id (computed once per batch).
        self._fingerprints: dict[UUID, str] = {}
        #: Incidents by the exact row last written or read: a row read back unchanged is
        #: not parsed again. Keyed by content, so a change by an admin command is seen.
        self._rows: dict[tuple[Any, ...], Incident] = {}

    # -- prepare: one query per table for the whole batch ------------------------------------

    async def prepare(self, tx: Transaction, messages: Sequence[Envelope]) -> None:
        alerts = [m for m in messages if isinstance(m, SecurityAlert)]
        view = BatchView()
        self._fingerprints = {m.message_id: self._fingerprint(m) for m in alerts}
        by_fp: dict[FpKey, list[SecurityAlert]] = {}
        for m in alerts:
            by_fp.setdefault((m.tenant_id, self.fingerprint(m)), []).append(m)
        if len(self._rows) > 50_000:
            self._rows = {}
        for row in await db.open_incident_rows(tx, sorted(by_fp)):
            incident = self._rows.get(row) or db.incident_from(row)
            self._rows[row] = incident
            key = (incident.tenant_id, incident.fingerprint)
            view.incidents.setdefault(key, []).append(incident)
        view.alerts = await db.seen_alerts(
            tx, sorted({(m.tenant_id, m.payload.alert_id) for m in alerts})
        )
        await self._load_subjects(tx, view, by_fp)
        await self._load_locks(tx, view, by_fp)
        self.view = view

    async def _load_subjects(
        self, tx: Transaction, view: BatchView, by_fp: dict[FpKey, list[SecurityAlert]]
    ) -> None:
        wanted: set[tuple[str, str, str]] = set()
        for key, incidents in view.incidents.items():
            for incident in incidents:
                ikey = (incident.tenant_id, incident.incident_id)
                view.subjects[ikey] = {}
                if may_advance(incident, [m.payload for m in by_fp[key]]):
                    view.complete.add(ikey)
                else:
                    wanted.update(
                        (*ikey, s) for m in by_fp[key] for s in m.payload.affected_subjects
                    )
        rows = await db.told_subjects(tx, sorted(wanted))
        rows += await db.subjects_of(tx, sorted(view.complete))
        for tenant, incident_id, subject, phase in rows:
            view.subjects[(tenant, incident_id)][subject] = int(phase)

    async def _load_locks(
        self, tx: Transaction, view: BatchView, by_fp: dict[FpKey, list[SecurityAlert]]
    ) -> None:
        wanted = {
            (incident.tenant_id, incident.incident_id, account)
            for key, incidents in view.incidents.items()
            for incident in incidents
            for m in by_fp[key]
            if m.payload.category in ACCOUNT_TAKEOVER
            for account in m.payload.target.account_ids
        }
        view.locked = await db.locked_accounts(tx, sorted(wanted))

    def fingerprint(self, message: SecurityAlert) -> str:
        found = self._fingerprints.get(message.message_id)
        return found if found is not None else self._fingerprint(message)

    def _fingerprint(self, message: SecurityAlert) -> str:
        return rules.fingerprint(message.tenant_id, message.payload, self.fields)

    # -- handle ------------------------------------------------------------------------------

    async def handle(self, message: Envelope, effects: Effects) -> None:
        if not isinstance(message, SecurityAlert):
            raise UnknownMessageType(f"security worker does not handle {message.type}")
        alert, tenant = message.payload, message.tenant_id
        if (tenant, alert.alert_id) in self.view.alerts:
            effects.audit("security_alert_repeated", None, alert_id=alert.alert_id)
            return
        fp_key = (tenant, self.fingerprint(message))
        before = rules.pick(self.view.incidents.get(fp_key, []), alert.detected_at, self.window)
        incident_id = before.incident_id if before else new_incident_id()
        ikey = (tenant, incident_id)
        known = self.view.subjects.get(ikey, {})
        fresh = [s for s in dict.fromkeys(alert.affected_subjects) if s not in known]
        empty = rules.open_incident(tenant, incident_id, fp_key[1], alert, effects.now)
        decision = rules.absorb(before, empty, alert, len(fresh), effects.now)
        after = decision.after
        phase_begins = after.phase > (before.phase if before else 0)
        if before is not None and phase_begins and ikey not in self.view.complete:
            raise NotYetKnown("incident subjects not loaded for a new notice phase")

        cause = f"alert:{alert.alert_id}"
        self._record_alert(message, incident_id, effects)
        told = notify_subjects(decision, {**known, **dict.fromkeys(fresh, 0)}, effects)
        locks = self._lock_accounts(message, after, effects)
        row = db.incident_row(after)
        self._record_incident(decision, row, cause, effects)
        self._tell_tenant(decision, cause, alert.alert_id, len(told), effects)

        # Decide first, record, then update the batch's view (infra/worker.py convention).
        others = [i for i in self.view.incidents.get(fp_key, []) if i.incident_id != incident_id]
        self.view.incidents[fp_key] = [*others, after]
        self._rows[row] = after
        self.view.subjects[ikey] = {**known, **dict.fromkeys(fresh, 0), **told}
        if before is None:
            self.view.complete.add(ikey)
        self.view.alerts.add((tenant, alert.alert_id))
        self.view.locked.update((tenant, incident_id, a) for a in locks)

    @staticmethod
    def _record_alert(message: SecurityAlert, incident_id: str, effects: Effects) -> None:
        alert = message.payload
        effects.write(
            db.ALERT_INSERT,
            (
                message.tenant_id,
                alert.alert_id,
                incident_id,
                str(message.message_id),
                alert.source.value,
                alert.category.value,
                alert.severity_hint.value if alert.severity_hint else None,
                db.iso(alert.detected_at),
                alert.personal_data_involved.value,
                db.names(alert.data_categories),
                alert.target.model_dump_json(),
                len(alert.affected_subjects),
                alert.unauthorised_party,
                alert.description,
                db.iso(effects.now),
            ),
        )

    def _lock_accounts(
        self, message: SecurityAlert, after: Incident, effects: Effects
    ) -> list[str]:
        """Protective action for account-takeover alerts: lock each account once."""
        alert = message.payload
        if alert.category not in ACCOUNT_TAKEOVER:
            return []
        accounts = [
            a
            for a in dict.fromkeys(alert.target.account_ids)
            if (after.tenant_id, after.incident_id, a) not in self.view.locked
        ]
        for account in accounts:
            effects.write(
                db.ACCOUNT_INSERT,
                (after.tenant_id, after.incident_id, account, db.iso(effects.now)),
            )
            effects.emit(
                AccountLock(
                    tenant_id=after.tenant_id,
                    correlation_id=after.incident_id,
                    payload=AccountLockPayload(
                        account_id=account,
                        target_system=alert.target.system,
                        incident_id=after.incident_id,
                        reason=alert.category,
                    ),
                )
            )
        if accounts:
            effects.audit(
                "accounts_lock_requested", None, incident_id=after.incident_id, count=len(accounts)
            )
        return accounts

    @staticmethod
    def _record_incident(
        decision: Decision, row: tuple[Any, ...], cause: str, effects: Effects
    ) -> None:
        after = decision.after
        effects.write(db.INCIDENT_UPSERT, row)
        record_timeline(after, decision.changes, cause, effects)
        if after.compromise is not None and (decision.compromise_began or decision.notable):
            effects.write(db.REPORT_UPSERT, db.report_row(after, effects.now))

    def _tell_tenant(
        self, decision: Decision, cause: str, alert_id: str, told: int, effects: Effects
    ) -> None:
        """POPIA s21(2): the operator tells the responsible party at once."""
        after = decision.after
        if decision.opened:
            effects.emit(event(IncidentOpened, after, cause_alert_id=alert_id))
        elif decision.notable:
            changed = sorted({c.value for c, _, _ in decision.changes} - {"alert_joined"})
            effects.emit(event(IncidentUpdated, after, changes=changed, cause=cause))
        if decision.opened or decision.notable:
            # A plain join is documented by its alert row and timeline entry; a burst of
            # duplicates does not flood the audit log.
            effects.audit(
                "incident_opened" if decision.opened else "incident_changed",
                None,
                incident_id=after.incident_id,
                alert_id=alert_id,
                alert_count=after.alert_count,
                status=after.status,
                severity=after.severity,
            )
        if decision.compromise_began or decision.confirmed:
            effects.emit(compromise_event(after, told))
            effects.audit(
                "tenant_told_of_compromise",
                None,
                incident_id=after.incident_id,
                compromise=after.compromise,
                report_due_at=after.report_due_at,
            )
        if decision.escalate:
            self.escalate(after, effects)

    def escalate(self, after: Incident, effects: Effects) -> None:
        effects.emit(
            IncidentEscalated(
                tenant_id=after.tenant_id,
                correlation_id=after.incident_id,
                payload=IncidentEscalatedPayload(
                    incident_id=after.incident_id,
                    severity=after.severity,
                    severity_score=after.score,
                    status=after.status,
                    contact=self.oncall,
                ),
            )
        )
        effects.audit(
            "oncall_notified", None, incident_id=after.incident_id, severity=after.severity
        )

    # -- periodic: the 72-hour clock ---------------------------------------------------------

    async def gauges(self, store: SqliteStore, now: datetime) -> dict[str, float]:
        """Open incidents and regulator reports past their 72 hours, for ops."""
        async with store.transaction() as tx:
            open_row = await tx.fetchone(
                "SELECT count(*) FROM security_incidents WHERE status != 'closed'"
            )
            late_row = await tx.fetchone(
                "SELECT count(*) FROM security_reports WHERE sent_at IS NULL AND due_at < ?",
                (now.isoformat(),),
            )
        return {
            "incidents_open": float(open_row[0] if open_row else 0),
            "reports_overdue": float(late_row[0] if late_row else 0),
        }

    async def tick(self, store: SqliteStore, sink: EventSink, now: datetime) -> None:
        from workers.security_admin import sweep_reports

        await sweep_reports(store, sink, now, self.warn)


def may_advance(incident: Incident, alerts: Sequence[SecurityAlertPayload]) -> bool:
    """Could these alerts start a notice phase (needing every subject of the incident)?"""
    for alert in alerts:
        seen = alert.personal_data_involved
        if seen is PersonalData.SUSPECTED and incident.compromise is None:
            return True
        if seen is PersonalData.CONFIRMED and incident.compromise is not Compromise.CONFIRMED:
            return True
        if incident.compromise is not None and not set(alert.data_categories) <= set(
            incident.data_categories
        ):
            return True
    return False


def notify_subjects(
    decision: Decision, subjects: dict[str, int], effects: Effects
) -> dict[str, int]:
    """POPIA s22(5) notice once per subject per incident; a later phase sends an update.

    ``subjects`` maps each known subject to the phase it was told (0: not yet). Returns
    the subjects told now, with their new phase; records every subject's row.
    """
    after = decision.after
    told: dict[str, int] = {}
    if after.phase >= 1:
        notice = content.notice_context(after)
        update = None
        if decision.before is not None and decision.new_phase:
            update = content.update_context(after, content.news_for(decision.before, after))
        for subject, phase in subjects.items():
            if phase == 0:
                effects.notify(subject, "breach_notice", None, notice)
                told[subject] = after.phase
            elif phase < after.phase and update is not None:
                effects.notify(subject, "breach_update", None, update)
                told[subject] = after.phase
    now = db.iso(effects.now)
    for subject, phase in subjects.items():
        if subject in told or phase == 0:
            effects.write(
                db.SUBJECT_UPSERT,
                (
                    after.tenant_id,
                    after.incident_id,
                    subject,
                    now,
                    told.get(subject, phase),
                    now if subject in told else None,
                ),
            )
    if told:
        effects.audit(
            "breach_notices_queued",
            None,
            incident_id=after.incident_id,
            phase=after.phase,
            subjects=len(told),
        )
    return told


def record_timeline(
    incident: Incident,
    entries: Sequence[tuple[Change, str | None, str | None]],
    cause: str,
    effects: Effects,
) -> None:
    for what, old, new in entries:
        effects.write(
            db.TIMELINE_INSERT,
            (
                incident.tenant_id,
                incident.incident_id,
                db.iso(effects.now),
                what.value,
                old,
                new,
                cause,
            ),
        )


def facts(incident: Incident) -> IncidentFacts:
    return IncidentFacts(
        incident_id=incident.incident_id,
        status=incident.status,
        severity=incident.severity,
        severity_score=incident.score,
        source=incident.source,
        category=incident.category,
        target_system=incident.target_system,
        personal_data_involved=incident.personal_data,
        data_categories=sorted(incident.data_categories),
        alert_count=max(incident.alert_count, 1),
        subject_count=incident.subject_count,
        first_detected_at=incident.first_detected_at,
        last_detected_at=incident.last_detected_at,
    )


def event(
    kind: type[IncidentOpened] | type[IncidentUpdated], incident: Incident, **fields: Any
) -> IncidentOpened | IncidentUpdated:
    if kind is IncidentOpened:
        return IncidentOpened(
            tenant_id=incident.tenant_id,
            correlation_id=incident.incident_id,
            payload=IncidentOpenedPayload(incident=facts(incident), **fields),
        )
    return IncidentUpdated(
        tenant_id=incident.tenant_id,
        correlation_id=incident.incident_id,
        payload=IncidentUpdatedPayload(incident=facts(incident), **fields),
    )


def compromise_event(incident: Incident, told: int) -> IncidentCompromise:
    assert incident.compromise is not None
    assert incident.aware_at is not None
    due = incident.report_due_at
    assert due is not None
    return IncidentCompromise(
        tenant_id=incident.tenant_id,
        correlation_id=incident.incident_id,
        payload=IncidentCompromisePayload(
            incident_id=incident.incident_id,
            compromise=incident.compromise,
            breach_type=rules.breach_type(incident.alert_categories),
            data_categories=sorted(incident.data_categories),
            subject_count=incident.subject_count,
            subjects_notified=told,
            aware_at=incident.aware_at,
            regulator_due_at=due,
            unauthorised_party_known=incident.unauthorised_party is not None,
        ),
    )
