"""Security worker: alerts become incidents; a compromise is notified once, in phases.

Rules enforced (docs/rules.md "Security compromises"; pure rules in ``workers/security/rules.py``):

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
  POPIA s22 and the GDPR art 33(1) clock: 72 hours from awareness (the
  detection time of the alert that gave the grounds). The periodic sweep
  (``tick``) flags unsent reports due within ``security_report_warn_h`` and
  overdue ones, once per state, as audit and log events; ``incidents list``
  computes the same flag at list time, so it shows even with no worker running.
* Each affected subject gets one ``breach_notice`` per incident with the POPIA
  s22(5) parts (``workers/security/notices.py``), through the notification outbox;
  a later phase (confirmation, more data categories; GDPR art 33(4), art 34)
  sends a ``breach_update`` to subjects already told, never a second notice.
  Under POPIA every compromise is notifiable whatever its severity.
* Protective action: ``account.lock`` for each account named by an
  account-takeover alert (once per account per incident); ``incident.escalated``
  to the on-call security contact when an incident reaches high severity. When
  it does while personal data involvement is still unknown, the escalation asks
  for a decision on it (``decision_needed``): a serious incident is never left
  silent because no alert said "suspected".

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
from infra.runtime.worker import Effects, Sink, Worker, handles
from infra.store import Store, Transaction
from messages.envelope import Envelope
from messages.errors import NotYetKnown
from messages.security import (
    ACCOUNT_TAKEOVER,
    AccountLock,
    AccountLockPayload,
    Compromise,
    IncidentEscalated,
    IncidentEscalatedPayload,
    IncidentOpened,
    IncidentUpdated,
    PersonalData,
    SecurityAlert,
    SecurityAlertPayload,
)
from workers.security import rules, tables
from workers.security.admin import sweep_reports
from workers.security.effects import compromise_event, event, notify_subjects, record_timeline
from workers.security.rules import Decision, Incident
from workers.security.tables import SECURITY

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
    schema = SECURITY
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
        # Two processes seeing alerts of one fingerprint (or one alert twice) at the same
        # moment: the second waits for the first's commit, then joins its incident.
        await tx.lock(
            *(f"security:fp:{t}:{fp}" for t, fp in by_fp),
            *(f"security:alert:{m.tenant_id}:{m.payload.alert_id}" for m in alerts),
        )
        for row in await tables.open_incident_rows(tx, sorted(by_fp)):
            incident = self._rows.get(row) or tables.incident_from(row)
            self._rows[row] = incident
            key = (incident.tenant_id, incident.fingerprint)
            view.incidents.setdefault(key, []).append(incident)
        view.alerts = await tables.seen_alerts(
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
        rows = await tables.told_subjects(tx, sorted(wanted))
        rows += await tables.subjects_of(tx, sorted(view.complete))
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
        view.locked = await tables.locked_accounts(tx, sorted(wanted))

    def fingerprint(self, message: SecurityAlert) -> str:
        found = self._fingerprints.get(message.message_id)
        return found if found is not None else self._fingerprint(message)

    def _fingerprint(self, message: SecurityAlert) -> str:
        return rules.fingerprint(message.tenant_id, message.payload, self.fields)

    # -- handle ------------------------------------------------------------------------------

    @handles(SecurityAlert)
    async def alert(self, message: SecurityAlert, effects: Effects) -> None:
        """Correlate the alert; on a compromise (POPIA s22(1)) tell tenant and subjects."""
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
        row = tables.incident_row(after)
        self._record_incident(decision, row, cause, effects)
        self._tell_tenant(decision, cause, alert.alert_id, len(told), effects)

        # Decide first, record, then update the batch's view (infra/runtime/worker.py convention).
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
            tables.ALERT_INSERT,
            (
                message.tenant_id,
                alert.alert_id,
                incident_id,
                str(message.message_id),
                alert.source.value,
                alert.category.value,
                alert.severity_hint.value if alert.severity_hint else None,
                tables.iso(alert.detected_at),
                alert.personal_data_involved.value,
                tables.names(alert.data_categories),
                alert.target.model_dump_json(),
                len(alert.affected_subjects),
                alert.unauthorised_party,
                alert.description,
                tables.iso(effects.now),
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
                tables.ACCOUNT_INSERT,
                (after.tenant_id, after.incident_id, account, tables.iso(effects.now)),
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
        effects.write(tables.INCIDENT_UPSERT, row)
        record_timeline(after, decision.changes, cause, effects)
        if after.compromise is not None and (decision.compromise_began or decision.notable):
            effects.write(tables.REPORT_UPSERT, tables.report_row(after, effects.now))

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
        """High or very high severity: the on-call contact is told; with personal data
        involvement still unknown, asked to decide on it (POPIA s22(1): never silence)."""
        undecided = after.personal_data is PersonalData.UNKNOWN
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
                    decision_needed="personal_data_involvement" if undecided else None,
                ),
            )
        )
        effects.audit(
            "oncall_notified", None, incident_id=after.incident_id, severity=after.severity
        )
        if undecided:
            effects.audit(
                "compromise_decision_requested",
                None,
                incident_id=after.incident_id,
                severity=after.severity,
            )

    # -- periodic: the 72-hour clock ---------------------------------------------------------

    async def gauges(self, store: Store, now: datetime) -> dict[str, float]:
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

    async def tick(self, store: Store, sink: Sink, now: datetime) -> None:
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
