"""What an incident's change records and announces, shared by the worker and admin actions.

* ``notify_subjects``: the POPIA s22(5) notice once per subject per incident, and a
  ``breach_update`` to those already told when a new phase begins (GDPR art 33(4));
* ``record_timeline``: every change with its cause (GDPR art 33(5));
* ``event`` / ``compromise_event``: the tenant told at once (POPIA s21(2)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.runtime.worker import Effects
from messages.security import (
    IncidentCompromise,
    IncidentCompromisePayload,
    IncidentFacts,
    IncidentOpened,
    IncidentOpenedPayload,
    IncidentUpdated,
    IncidentUpdatedPayload,
)
from workers.security import notices, rules, tables
from workers.security.rules import Change, Decision, Incident


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
        notice = notices.notice_context(after)
        update = None
        if decision.before is not None and decision.new_phase:
            update = notices.update_context(after, notices.news_for(decision.before, after))
        for subject, phase in subjects.items():
            if phase == 0:
                effects.notify(subject, "breach_notice", None, notice)
                told[subject] = after.phase
            elif phase < after.phase and update is not None:
                effects.notify(subject, "breach_update", None, update)
                told[subject] = after.phase
    now = tables.iso(effects.now)
    for subject, phase in subjects.items():
        if subject in told or phase == 0:
            effects.write(
                tables.SUBJECT_UPSERT,
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
            tables.TIMELINE_INSERT,
            (
                incident.tenant_id,
                incident.incident_id,
                tables.iso(effects.now),
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
