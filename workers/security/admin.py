"""Admin actions on incidents and the regulator report clock, without a message.

Each action is one transaction with standalone effects (infra/runtime/worker.py), actor
``operator:<settings.operator>`` (the console passes ``admin:<name>``; the sweep is
``sweep:reports``), an audit entry and a
timeline entry naming the cause, and the tenant told through ``incident.updated``
(POPIA s21(2)).

* ``confirm``: the compromise is confirmed. If subjects were told of an alleged
  compromise, each gets a ``breach_update``; if none were told yet, each gets
  the ``breach_notice`` (POPIA s22(5)). The regulator report becomes
  "confirmed".
* ``contain`` / ``close``: status changes. A compromised incident closes only
  once its regulator report is sent: every compromise is notifiable (POPIA
  s22(1)).
* ``mark_report_sent``: the report went to the Information Regulator. After
  the 72 hours a reason for the delay is required (GDPR art 33(1)).
* ``sweep_reports``: unsent reports within ``security_report_warn_h`` of their
  72 hours are flagged ``due_soon``, later ``overdue``, once per state, as an
  audit and log event (``regulator_report_due_soon`` / ``_overdue``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from infra.runtime.worker import Effects, Sink, announce
from infra.store import Store, Transaction
from messages.errors import RuleViolation, UnknownSubject
from messages.security import Compromise, IncidentStatus, IncidentUpdated
from workers.security import notices, rules, tables
from workers.security.effects import compromise_event, event, notify_subjects, record_timeline
from workers.security.rules import Change, Decision, Incident

WORKER = "security"
UNSENT_DUE = (
    "SELECT tenant_id, incident_id, due_at, flag FROM security_reports"
    " WHERE sent_at IS NULL AND due_at <= ?"
)
SET_FLAG = "UPDATE security_reports SET flag = ? WHERE tenant_id = ? AND incident_id = ?"
SET_SENT = (
    "UPDATE security_reports SET sent_at = ?, delay_reason = ?, flag = NULL"
    " WHERE tenant_id = ? AND incident_id = ?"
)


async def load(tx: Transaction, incident_id: str, tenant_id: str | None) -> Incident:
    """The incident, locked for the rest of the transaction (one admin action at a time)."""
    await tx.lock(f"security:incident:{incident_id}")
    incident = await tables.find_incident(tx, incident_id, tenant_id)
    if incident is None:
        raise UnknownSubject("no such incident")
    return incident


def _effects(incident: Incident, actor: str, now: datetime) -> Effects:
    return Effects.standalone(
        WORKER, incident.tenant_id, actor=actor, correlation_id=incident.incident_id, now=now
    )


def _record_change(decision: Decision, actor: str, effects: Effects) -> None:
    after = decision.after
    entries = [
        e
        for e in rules.changes(decision.before, decision.before or after, after)
        if e[0] is not Change.ALERT_JOINED
    ]
    effects.write(tables.INCIDENT_UPSERT, tables.incident_row(after))
    record_timeline(after, entries, actor, effects)
    if after.compromise is not None:
        effects.write(tables.REPORT_UPSERT, tables.report_row(after, effects.now))
    changed = sorted({e[0].value for e in entries})
    if changed:
        effects.emit(event(IncidentUpdated, after, changes=changed, cause=actor))


async def confirm(
    store: Store,
    sink: Sink | None,
    incident_id: str,
    operator: str,
    now: datetime,
    tenant_id: str | None = None,
    *,
    actor: str | None = None,
) -> Incident:
    actor = actor or f"operator:{operator}"
    async with store.transaction() as tx:
        before = await load(tx, incident_id, tenant_id)
        if before.status is IncidentStatus.CLOSED:
            raise RuleViolation("the incident is closed")
        if before.compromise is Compromise.CONFIRMED:
            return before
        after = rules.confirm(before, now)
        subjects = await tables.all_subjects(tx, before.tenant_id, before.incident_id)
        effects = _effects(before, actor, now)
        decision = Decision(before, after, ())
        told = notify_subjects(decision, subjects, effects)
        _record_change(decision, actor, effects)
        effects.emit(compromise_event(after, len(told)))
        effects.audit(
            "incident_confirmed",
            None,
            incident_id=incident_id,
            subjects_told=len(told),
            report_due_at=after.report_due_at,
        )
        tx.stage_all(effects.writes)
    announce(sink, effects)
    return after


async def set_status(
    store: Store,
    sink: Sink | None,
    incident_id: str,
    status: IncidentStatus,
    operator: str,
    now: datetime,
    tenant_id: str | None = None,
    *,
    actor: str | None = None,
) -> Incident:
    """``contain`` or ``close``; closing a compromise needs its report sent first."""
    actor = actor or f"operator:{operator}"
    async with store.transaction() as tx:
        before = await load(tx, incident_id, tenant_id)
        if before.status is IncidentStatus.CLOSED:
            raise RuleViolation("the incident is closed")
        if status is IncidentStatus.CLOSED and before.compromise is not None:
            report = await tx.fetchone(
                "SELECT sent_at FROM security_reports WHERE tenant_id = ? AND incident_id = ?",
                (before.tenant_id, incident_id),
            )
            if report is None or report[0] is None:
                raise RuleViolation(
                    "the regulator report is not sent: record it with `incidents report ID"
                    " --sent` first (POPIA s22(1))"
                )
        after = replace(before, status=status, updated_at=now)
        effects = _effects(before, actor, now)
        _record_change(Decision(before, after, ()), actor, effects)
        effects.audit(f"incident_{status.value}", None, incident_id=incident_id)
        tx.stage_all(effects.writes)
    announce(sink, effects)
    return after


async def mark_report_sent(
    store: Store,
    incident_id: str,
    operator: str,
    now: datetime,
    reason: str | None,
    tenant_id: str | None = None,
    *,
    actor: str | None = None,
) -> dict[str, Any]:
    """Record the report as sent; a late one needs the reasons for the delay (art 33(1))."""
    actor = actor or f"operator:{operator}"
    async with store.transaction() as tx:
        incident = await load(tx, incident_id, tenant_id)
        report = await report_of(tx, incident)
        if report is None:
            raise RuleViolation("no regulator report: no compromise was recorded")
        if report["report_date"] is not None:
            raise RuleViolation("the report is already recorded as sent")
        if rules.late(datetime.fromisoformat(report["due_at"]), now) and not reason:
            raise RuleViolation(
                "the report is later than 72 hours after awareness: give --reason for the"
                " delay (GDPR art 33(1))"
            )
        effects = _effects(incident, actor, now)
        effects.write(SET_SENT, (tables.iso(now), reason, incident.tenant_id, incident_id))
        record_timeline(incident, [(Change.REPORT, report["flag"], "sent")], actor, effects)
        effects.audit("regulator_report_sent", None, incident_id=incident_id, late=bool(reason))
        tx.stage_all(effects.writes)
        sent = await report_of(tx, incident)
    announce(None, effects)
    assert sent is not None
    return sent


async def sweep_reports(store: Store, sink: Sink | None, now: datetime, warn: timedelta) -> int:
    """Flag unsent reports as their 72 hours run out; each state once."""
    batch: list[Effects] = []
    async with store.transaction() as tx:
        await tx.lock("security:sweep:reports")  # each state once, however many processes
        for tenant, incident_id, due_at, stored in await tx.fetchall(
            UNSENT_DUE, (tables.iso(now + warn),)
        ):
            flag = rules.report_flag(datetime.fromisoformat(due_at), None, now, warn)
            if flag is None or flag.value == stored:
                continue
            effects = Effects.standalone(
                WORKER, tenant, actor="sweep:reports", correlation_id=incident_id, now=now
            )
            effects.write(SET_FLAG, (flag.value, tenant, incident_id))
            effects.write(
                tables.TIMELINE_INSERT,
                (
                    tenant,
                    incident_id,
                    tables.iso(now),
                    Change.REPORT.value,
                    stored,
                    flag.value,
                    "sweep",
                ),
            )
            effects.audit(
                f"regulator_report_{flag.value}", None, incident_id=incident_id, due_at=due_at
            )
            tx.stage_all(effects.writes)
            batch.append(effects)
    announce(sink, *batch)
    return len(batch)


async def report_of(tx: Transaction, incident: Incident) -> dict[str, Any] | None:
    """The regulator report (POPIA s22; GDPR art 33(3)) as JSON-ready fields."""
    row = await tx.fetchone(
        "SELECT compromise, breach_type, data_categories, subject_count, notified_how,"
        " incident_date, aware_at, due_at, sent_at, delay_reason, flag FROM security_reports"
        " WHERE tenant_id = ? AND incident_id = ?",
        (incident.tenant_id, incident.incident_id),
    )
    if row is None:
        return None
    told = await tx.fetchone(
        "SELECT count(*) FROM security_incident_subjects WHERE tenant_id = ? AND incident_id = ?"
        " AND phase_told >= 1",
        (incident.tenant_id, incident.incident_id),
    )
    delivered = await notice_outcomes(tx, incident)
    return {
        "tenant_id": incident.tenant_id,
        "incident_id": incident.incident_id,
        "compromise": row[0],
        "type": row[1],
        "data_categories": json.loads(row[2]),
        "subject_count": row[3],
        "subjects_notified": told[0] if told else 0,
        "notified_how": row[4],
        "notices": delivered,
        "not_delivered_means": NOT_DELIVERED_MEANS if delivered["not_delivered"] else None,
        "incident_date": row[5],
        "aware_at": row[6],
        "due_at": row[7],
        "report_date": row[8],
        "delay_reason": row[9],
        "flag": row[10],
        "severity": incident.severity.value,
        "severity_score": incident.score,
        "consequences": notices.consequences(incident),
        "measures": notices.measures(incident),
        "unauthorised_party": incident.unauthorised_party,
    }


#: What the report says when a breach notice reached no one: a notice must be in writing
#: (e-mail or post; an SMS cannot carry the s22(5) parts), so a subject with neither needs
#: one of the other means of s22(4), which the responsible party chooses.
NOT_DELIVERED_MEANS = (
    "POPIA s22(4)(c)-(e): a prominent notice on the responsible party's website, publication"
    " in the news media, or as the Information Regulator directs"
)
NOTICE_OUTCOMES = (
    "SELECT status, count(*) FROM notification_outbox WHERE tenant_id = ?"
    " AND kind IN ('breach_notice', 'breach_update') AND context LIKE ? ESCAPE '!'"
    " GROUP BY status"
)


async def notice_outcomes(tx: Transaction, incident: Incident) -> dict[str, int]:
    """The incident's breach notices and updates by outcome: ``sent``, ``not_delivered``
    (failed for good: no address in writing, an address refused) and ``pending``."""
    ref = json.dumps({"incident_ref": incident.incident_id})[1:-1]  # as in the context
    pattern = "%" + "".join("!" + c if c in "!%_" else c for c in ref) + "%"
    rows = await tx.fetchall(NOTICE_OUTCOMES, (incident.tenant_id, pattern))
    counts = {"sent": 0, "not_delivered": 0, "pending": 0}
    for status, count in rows:
        bucket = {"sent": "sent", "failed": "not_delivered"}.get(str(status), "pending")
        counts[bucket] += int(count)
    return counts
