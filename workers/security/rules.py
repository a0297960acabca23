"""Incident rules without I/O: fingerprint, ENISA severity, status, compromise, report clock.

Correlation (docs/rules.md "Security compromises"): alerts sharing a fingerprint
inside a window join one
open incident. The fingerprint is always scoped to the tenant (tenants never
share an incident) plus the configured fields (default: source, category and
target system; ``target_accounts`` adds the alert's sorted account ids). An
alert joins the not-closed incident of its fingerprint whose detection span,
widened by the window on both sides, holds the alert's ``detected_at``.

Severity: the ENISA method for personal data breaches (ENISA, *Recommendations
for a methodology of the assessment of severity of personal data breaches*,
2013)::

    SE = DPC x EI + CB

* DPC, data processing context: the base score of the most sensitive data
  category involved: simple data (identity, contact) 1; behavioural data
  (communications, behaviour, credentials) 2; financial data (financial,
  credit) 3; sensitive data (POPIA s26 special information,
  children's information) 4. No category declared: 1, since every record on a
  collection platform is at least identity and contact data.
* EI, ease of identification: maximum 1.0 when identity data is involved or
  the affected subjects are known by reference; significant 0.75 for contact
  data; limited 0.5 for other personal data suspected or confirmed; negligible
  0.25 while personal data involvement is unknown.
* CB, circumstances of the breach, from the alert categories: loss of
  confidentiality (+0.25 exposed to known or few recipients, +0.5 to unknown
  recipients), of integrity (+0.25 recoverable, +0.5 not), of availability
  (+0.25 temporary, +0.5 permanent), and malicious intent (+0.5). Each
  dimension takes its highest value over the incident's alerts.

Bands: low < 2, medium 2 to < 3, high 3 to < 4, very high >= 4. An incident's
score only grows: it is recomputed from the union of everything its alerts said.
Under POPIA every compromise is notifiable whatever its band; the band sets
priority and escalation only (POPIA s22(1)).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from messages.security import (
    AlertCategory,
    AlertSource,
    BreachType,
    Compromise,
    DataCategory,
    IncidentStatus,
    PersonalData,
    SecurityAlertPayload,
    Severity,
)

FINGERPRINT_FIELDS = ("source", "category", "target_system", "target_accounts")
#: GDPR art 33(1): the supervisory authority within 72 hours of becoming aware.
REPORT_WITHIN = timedelta(hours=72)

DPC_BASE: dict[DataCategory, int] = {
    DataCategory.IDENTITY: 1,
    DataCategory.CONTACT: 1,
    DataCategory.COMMUNICATIONS: 2,
    DataCategory.BEHAVIOURAL: 2,
    DataCategory.CREDENTIALS: 2,
    DataCategory.FINANCIAL: 3,
    DataCategory.CREDIT: 3,
    DataCategory.SPECIAL: 4,
    DataCategory.CHILDREN: 4,
}

#: Circumstances per alert category: (confidentiality, integrity, availability, malicious).
CIRCUMSTANCES: dict[AlertCategory, tuple[float, float, float, float]] = {
    AlertCategory.BRUTE_FORCE: (0.25, 0.0, 0.0, 0.5),
    AlertCategory.CREDENTIAL_STUFFING: (0.25, 0.0, 0.0, 0.5),
    AlertCategory.UNAUTHORIZED_ACCESS: (0.25, 0.0, 0.0, 0.5),
    AlertCategory.PRIVILEGE_ESCALATION: (0.25, 0.25, 0.0, 0.5),
    AlertCategory.DATA_EXFILTRATION: (0.5, 0.0, 0.0, 0.5),
    AlertCategory.MALWARE: (0.25, 0.25, 0.25, 0.5),
    AlertCategory.RANSOMWARE: (0.5, 0.5, 0.5, 0.5),
    AlertCategory.LOST_DEVICE: (0.25, 0.0, 0.25, 0.0),
    AlertCategory.MISDELIVERY: (0.25, 0.0, 0.0, 0.0),
    AlertCategory.DATA_DESTRUCTION: (0.0, 0.5, 0.5, 0.0),
    AlertCategory.INSIDER_MISUSE: (0.25, 0.0, 0.0, 0.5),
    AlertCategory.OTHER: (0.0, 0.0, 0.0, 0.0),
}

#: Regulator report type by alert category, most serious first when several apply.
BREACH_TYPES: tuple[tuple[AlertCategory, BreachType], ...] = (
    (AlertCategory.DATA_DESTRUCTION, BreachType.UNAUTHORISED_DESTRUCTION),
    (AlertCategory.RANSOMWARE, BreachType.DAMAGE),
    (AlertCategory.DATA_EXFILTRATION, BreachType.UNLAWFUL_ACCESS),
    (AlertCategory.UNAUTHORIZED_ACCESS, BreachType.UNLAWFUL_ACCESS),
    (AlertCategory.PRIVILEGE_ESCALATION, BreachType.UNLAWFUL_ACCESS),
    (AlertCategory.CREDENTIAL_STUFFING, BreachType.UNLAWFUL_ACCESS),
    (AlertCategory.BRUTE_FORCE, BreachType.UNLAWFUL_ACCESS),
    (AlertCategory.MALWARE, BreachType.DAMAGE),
    (AlertCategory.LOST_DEVICE, BreachType.LOSS),
    (AlertCategory.INSIDER_MISUSE, BreachType.UNLAWFUL_PROCESSING),
    (AlertCategory.MISDELIVERY, BreachType.UNLAWFUL_PROCESSING),
)

_PD_RANK = {PersonalData.UNKNOWN: 0, PersonalData.SUSPECTED: 1, PersonalData.CONFIRMED: 2}
_COMPROMISE_OF = {
    PersonalData.SUSPECTED: Compromise.ALLEGED,
    PersonalData.CONFIRMED: Compromise.CONFIRMED,
}


# -- correlation ---------------------------------------------------------------------------


def fingerprint(tenant_id: str, alert: SecurityAlertPayload, fields: Sequence[str]) -> str:
    """A stable key for (tenant, configured fields); the tenant is always part of it."""
    values = {
        "source": alert.source.value,
        "category": alert.category.value,
        "target_system": alert.target.system,
        "target_accounts": ",".join(sorted(set(alert.target.account_ids))),
    }
    parts = [tenant_id, *(f"{name}={values[name]}" for name in fields)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def within_window(incident: Incident, detected_at: datetime, window: timedelta) -> bool:
    return (
        incident.status is not IncidentStatus.CLOSED
        and incident.first_detected_at - window <= detected_at <= incident.last_detected_at + window
    )


def pick(
    candidates: Iterable[Incident], detected_at: datetime, window: timedelta
) -> Incident | None:
    """The open incident an alert joins: the most recently active one within the window."""
    fitting = [c for c in candidates if within_window(c, detected_at, window)]
    return max(fitting, key=lambda c: c.last_detected_at, default=None)


# -- severity ------------------------------------------------------------------------------


def band(score: float) -> Severity:
    """ENISA bands: low < 2, medium 2 to < 3, high 3 to < 4, very high >= 4."""
    if score >= 4:
        return Severity.VERY_HIGH
    if score >= 3:
        return Severity.HIGH
    if score >= 2:
        return Severity.MEDIUM
    return Severity.LOW


def dpc(data: Iterable[DataCategory]) -> int:
    return max((DPC_BASE[c] for c in data), default=1)


def ease_of_identification(
    data: frozenset[DataCategory], personal_data: PersonalData, subjects_known: bool
) -> float:
    if DataCategory.IDENTITY in data or subjects_known:
        return 1.0
    if DataCategory.CONTACT in data:
        return 0.75
    return 0.5 if personal_data is not PersonalData.UNKNOWN else 0.25


def circumstances(categories: Iterable[AlertCategory]) -> float:
    rows = [CIRCUMSTANCES[c] for c in categories] or [(0.0, 0.0, 0.0, 0.0)]
    return sum(max(row[i] for row in rows) for i in range(4))


def score(
    data: frozenset[DataCategory],
    personal_data: PersonalData,
    subjects_known: bool,
    categories: Iterable[AlertCategory],
) -> float:
    """SE = DPC x EI + CB, rounded to two places."""
    ei = ease_of_identification(data, personal_data, subjects_known)
    return round(dpc(data) * ei + circumstances(categories), 2)


def breach_type(categories: Iterable[AlertCategory]) -> BreachType:
    present = set(categories)
    for category, kind in BREACH_TYPES:
        if category in present:
            return kind
    return BreachType.UNLAWFUL_ACCESS


# -- incidents -----------------------------------------------------------------------------


class Change(StrEnum):
    OPENED = "opened"
    ALERT_JOINED = "alert_joined"
    STATUS = "status"
    SEVERITY = "severity"
    COMPROMISE = "compromise"
    DATA_CATEGORIES = "data_categories"
    SUBJECTS = "subjects"
    REPORT = "report"  # regulator report flagged or sent


@dataclass(frozen=True)
class Incident:
    """The state of one incident (one row of ``security_incidents``)."""

    tenant_id: str
    incident_id: str
    fingerprint: str
    source: AlertSource
    category: AlertCategory
    target_system: str
    status: IncidentStatus
    alert_categories: frozenset[AlertCategory]
    data_categories: frozenset[DataCategory]
    personal_data: PersonalData
    score: float
    severity: Severity
    alert_count: int
    subject_count: int
    first_detected_at: datetime
    last_detected_at: datetime
    opened_at: datetime
    updated_at: datetime
    compromise: Compromise | None = None
    aware_at: datetime | None = None
    phase: int = 0
    escalated: bool = False
    unauthorised_party: str | None = None

    @property
    def report_due_at(self) -> datetime | None:
        return self.aware_at + REPORT_WITHIN if self.aware_at else None


@dataclass(frozen=True)
class Decision:
    """An incident after one alert, and what changed (the timeline's entries)."""

    before: Incident | None
    after: Incident
    changes: tuple[tuple[Change, str | None, str | None], ...]

    @property
    def opened(self) -> bool:
        return self.before is None

    @property
    def compromise_began(self) -> bool:
        return self.after.compromise is not None and (
            self.before is None or self.before.compromise is None
        )

    @property
    def confirmed(self) -> bool:
        """Moved from alleged to confirmed (a new phase for subjects already told)."""
        return (
            self.before is not None
            and self.before.compromise is Compromise.ALLEGED
            and self.after.compromise is Compromise.CONFIRMED
        )

    @property
    def new_phase(self) -> bool:
        return self.before is not None and 0 < self.before.phase < self.after.phase

    @property
    def escalate(self) -> bool:
        return self.after.escalated and not (self.before and self.before.escalated)

    @property
    def notable(self) -> bool:
        """Worth an ``incident.updated``: more than an alert joining."""
        return any(c not in (Change.ALERT_JOINED, Change.OPENED) for c, _, _ in self.changes)


def derive_status(
    current: IncidentStatus | None, compromise: Compromise | None, severity: Severity
) -> IncidentStatus:
    """Status after an alert: compromise first, then escalation; a new alert reopens containment."""
    if compromise is Compromise.CONFIRMED:
        return IncidentStatus.COMPROMISE_CONFIRMED
    if compromise is Compromise.ALLEGED:
        return IncidentStatus.COMPROMISE_ALLEGED
    if severity in (Severity.HIGH, Severity.VERY_HIGH) or current in (
        IncidentStatus.INVESTIGATING,
        IncidentStatus.CONTAINED,  # it recurred: look again
    ):
        return IncidentStatus.INVESTIGATING
    return IncidentStatus.OPEN


def stronger(current: Compromise | None, seen: PersonalData) -> Compromise | None:
    """POPIA s22(1): reasonable grounds (suspected or confirmed) make a compromise."""
    found = _COMPROMISE_OF.get(seen)
    if found is None or current is Compromise.CONFIRMED:
        return current
    return found


def open_incident(
    tenant_id: str, incident_id: str, fp: str, alert: SecurityAlertPayload, now: datetime
) -> Incident:
    """An empty incident for an alert's fingerprint, before the alert is absorbed."""
    return Incident(
        tenant_id=tenant_id,
        incident_id=incident_id,
        fingerprint=fp,
        source=alert.source,
        category=alert.category,
        target_system=alert.target.system,
        status=IncidentStatus.OPEN,
        alert_categories=frozenset(),
        data_categories=frozenset(),
        personal_data=PersonalData.UNKNOWN,
        score=0.0,
        severity=Severity.LOW,
        alert_count=0,
        subject_count=0,
        first_detected_at=alert.detected_at,
        last_detected_at=alert.detected_at,
        opened_at=now,
        updated_at=now,
    )


def absorb(
    before: Incident | None,
    empty: Incident,
    alert: SecurityAlertPayload,
    new_subjects: int,
    now: datetime,
) -> Decision:
    """The incident after ``alert`` (``empty`` when it opens one), and what changed."""
    base = before or empty
    data = base.data_categories | set(alert.data_categories)
    categories = base.alert_categories | {alert.category}
    seen = max(base.personal_data, alert.personal_data_involved, key=_PD_RANK.__getitem__)
    subjects = base.subject_count + new_subjects
    same_inputs = (
        before is not None
        and data == base.data_categories
        and categories == base.alert_categories
        and seen is base.personal_data
        and (subjects > 0) == (base.subject_count > 0)
    )
    new_score = (
        base.score if same_inputs else max(base.score, score(data, seen, subjects > 0, categories))
    )
    severity = band(new_score)
    compromise = stronger(base.compromise, seen)
    aware_at = base.aware_at
    if compromise is not None and aware_at is None:
        aware_at = min(alert.detected_at, now)  # the clock starts at detection (conservative)
    phase = _next_phase(base, compromise, data)
    after = replace(
        base,
        status=derive_status(before.status if before else None, compromise, severity),
        alert_categories=frozenset(categories),
        data_categories=frozenset(data),
        personal_data=seen,
        score=new_score,
        severity=severity,
        alert_count=base.alert_count + 1,
        subject_count=subjects,
        first_detected_at=min(base.first_detected_at, alert.detected_at),
        last_detected_at=max(base.last_detected_at, alert.detected_at),
        updated_at=now,
        compromise=compromise,
        aware_at=aware_at,
        phase=phase,
        escalated=base.escalated or severity in (Severity.HIGH, Severity.VERY_HIGH),
        unauthorised_party=alert.unauthorised_party or base.unauthorised_party,
    )
    return Decision(before, after, tuple(changes(before, base, after)))


def _next_phase(
    base: Incident, compromise: Compromise | None, data: frozenset[DataCategory]
) -> int:
    """Notice phases: 1 when subjects are first told; +1 for news they must hear (art 33(4))."""
    if compromise is None:
        return base.phase
    if base.phase == 0:
        return 1
    confirmed_now = base.compromise is Compromise.ALLEGED and compromise is Compromise.CONFIRMED
    more_data = not data <= base.data_categories
    return base.phase + 1 if confirmed_now or more_data else base.phase


def changes(
    before: Incident | None, base: Incident, after: Incident
) -> list[tuple[Change, str | None, str | None]]:
    """Timeline entries (what, from, to); an opened incident is compared with its empty self."""
    found: list[tuple[Change, str | None, str | None]] = (
        [(Change.OPENED, None, after.incident_id)]
        if before is None
        else [(Change.ALERT_JOINED, str(base.alert_count), str(after.alert_count))]
    )
    pairs = (
        (Change.STATUS, base.status.value, after.status.value),
        (Change.SEVERITY, base.severity.value, after.severity.value),
        (Change.COMPROMISE, _value(base.compromise), _value(after.compromise)),
        (Change.DATA_CATEGORIES, _join(base.data_categories), _join(after.data_categories)),
        (Change.SUBJECTS, str(base.subject_count), str(after.subject_count)),
    )
    found += [(what, old, new) for what, old, new in pairs if old != new]
    return found


def _value(compromise: Compromise | None) -> str | None:
    return compromise.value if compromise else None


def _join(values: Iterable[StrEnum]) -> str:
    return ",".join(sorted(v.value for v in values))


# -- admin actions and the report clock ----------------------------------------------------


def confirm(incident: Incident, now: datetime) -> Incident:
    """``incidents confirm``: the compromise is confirmed; a new notice phase begins.

    Phase 0 -> 1 (first notices) when nothing was alleged yet, 1 -> 2 (updates) when
    subjects were told of an alleged compromise. A contained incident stays contained.
    """
    if incident.compromise is Compromise.CONFIRMED:
        return incident
    keep = incident.status in (IncidentStatus.CONTAINED, IncidentStatus.CLOSED)
    return replace(
        incident,
        compromise=Compromise.CONFIRMED,
        personal_data=PersonalData.CONFIRMED,
        aware_at=incident.aware_at or now,
        phase=incident.phase + 1,
        status=incident.status if keep else IncidentStatus.COMPROMISE_CONFIRMED,
        updated_at=now,
    )


class ReportFlag(StrEnum):
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"


def report_flag(
    due_at: datetime | None, sent_at: datetime | None, now: datetime, warn: timedelta
) -> ReportFlag | None:
    """An unsent report is due soon inside ``warn`` of its 72 hours, overdue after them."""
    if due_at is None or sent_at is not None:
        return None
    if now >= due_at:
        return ReportFlag.OVERDUE
    if now >= due_at - warn:
        return ReportFlag.DUE_SOON
    return None


def late(due_at: datetime, sent_at: datetime) -> bool:
    """GDPR art 33(1): a report after 72 hours must give the reasons for the delay."""
    return sent_at > due_at
