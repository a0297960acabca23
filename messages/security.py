"""Security messages: alerts in, incidents and protective commands out.

See docs/rules.md "Security compromises".

Inbound from detection systems (auth service, WAF, IDS, DLP, staff reports):

* ``security.alert``: something happened to a tenant's system or accounts. The
  security worker correlates alerts into incidents (workers/security).

Outbound, for the tenant (the responsible party; the platform is its operator
and tells it at once, POPIA s21(2)) and for the platform's own defences:

* ``incident.opened`` / ``incident.updated``: an incident was opened, or its
  status, severity, compromise state or affected subjects changed;
* ``incident.compromise``: there are reasonable grounds to believe personal
  information was accessed or acquired by an unauthorised person (POPIA
  s22(1)); the tenant must tell the Information Regulator and the subjects;
* ``account.lock``: a command to lock one account after an account-takeover
  alert (protective action);
* ``incident.escalated``: a high or very high severity incident, for the
  on-call security contact.

``description`` and ``unauthorised_party`` are free text that may hold
personal data (an attacker's address, a misdelivered letter's recipient):
they are stored with the incident, never logged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from messages.envelope import Envelope, Frozen, SubjectRef, UtcDatetime

Reference = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
AlertId = Annotated[
    Reference, Field(description="The detecting system's id for the alert; the dedupe key.")
]
AccountId = Annotated[
    Reference, Field(description="Opaque account reference on the target system.")
]
IncidentId = Annotated[
    str,
    StringConstraints(pattern=r"^inc-[0-9a-f]{16}$"),
    Field(description="privacyops' incident reference.", examples=["inc-3f9a1c0d7e2b4a65"]),
]
SystemName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$"),
    Field(description="The target system.", examples=["debtor-portal"]),
]


class AlertSource(StrEnum):
    AUTH_SERVICE = "auth_service"
    WAF = "waf"
    IDS = "ids"
    DLP = "dlp"
    EDR = "edr"
    STAFF_REPORT = "staff_report"
    OTHER = "other"


class AlertCategory(StrEnum):
    BRUTE_FORCE = "brute_force"
    CREDENTIAL_STUFFING = "credential_stuffing"
    UNAUTHORIZED_ACCESS = "unauthorized_access"
    PRIVILEGE_ESCALATION = "privilege_escalation"
    DATA_EXFILTRATION = "data_exfiltration"
    MALWARE = "malware"
    RANSOMWARE = "ransomware"
    LOST_DEVICE = "lost_device"
    MISDELIVERY = "misdelivery"
    DATA_DESTRUCTION = "data_destruction"
    INSIDER_MISUSE = "insider_misuse"
    OTHER = "other"


#: Categories where someone may be in an account that is not theirs: lock it.
ACCOUNT_TAKEOVER = frozenset(
    {
        AlertCategory.BRUTE_FORCE,
        AlertCategory.CREDENTIAL_STUFFING,
        AlertCategory.UNAUTHORIZED_ACCESS,
        AlertCategory.PRIVILEGE_ESCALATION,
    }
)


class SeverityHint(StrEnum):
    """The detecting system's own opinion; recorded, not used for the score."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class PersonalData(StrEnum):
    """Whether personal information is involved: suspected or confirmed is a compromise."""

    UNKNOWN = "unknown"
    SUSPECTED = "suspected"
    CONFIRMED = "confirmed"


class DataCategory(StrEnum):
    """Kinds of personal information, as scored by the ENISA method (workers/security/rules.py)."""

    IDENTITY = "identity"  # names, ID numbers
    CONTACT = "contact"  # addresses, e-mail, phone
    COMMUNICATIONS = "communications"  # letters, call notes, messages
    BEHAVIOURAL = "behavioural"  # payment behaviour, location, habits
    CREDENTIALS = "credentials"  # passwords, tokens, security questions
    FINANCIAL = "financial"  # bank details, account numbers, balances
    CREDIT = "credit"  # credit records, debt details, judgments
    SPECIAL = "special"  # POPIA s26: health, biometric, criminal, religion...
    CHILDREN = "children"  # POPIA s34


class Severity(StrEnum):
    """ENISA bands: low < 2, medium 2 to < 3, high 3 to < 4, very high >= 4."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very_high"


class IncidentStatus(StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    COMPROMISE_ALLEGED = "compromise_alleged"
    COMPROMISE_CONFIRMED = "compromise_confirmed"
    CONTAINED = "contained"
    CLOSED = "closed"


class Compromise(StrEnum):
    """Regulator report field: the compromise is alleged or confirmed (POPIA s22)."""

    ALLEGED = "alleged"
    CONFIRMED = "confirmed"


class BreachType(StrEnum):
    """Regulator report field: the type of compromise."""

    LOSS = "loss"
    DAMAGE = "damage"
    UNAUTHORISED_DESTRUCTION = "unauthorised_destruction"
    UNLAWFUL_ACCESS = "unlawful_access"
    UNLAWFUL_PROCESSING = "unlawful_processing"


class AlertTarget(Frozen):
    system: SystemName
    account_ids: list[AccountId] = Field(default_factory=list, max_length=1_000)


class SecurityAlertPayload(Frozen):
    alert_id: AlertId
    source: AlertSource
    category: AlertCategory
    severity_hint: SeverityHint | None = None
    detected_at: UtcDatetime = Field(description="When the detecting system saw it.")
    target: AlertTarget
    affected_subjects: list[SubjectRef] = Field(
        default_factory=list,
        max_length=5_000,
        description="Data subjects known to be affected, by opaque reference.",
    )
    personal_data_involved: PersonalData = PersonalData.UNKNOWN
    data_categories: list[DataCategory] = Field(default_factory=list, max_length=20)
    unauthorised_party: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        None,
        description="Identity of the unauthorised person, if known (POPIA s22(5)(d)). "
        "May be personal data: stored, never logged.",
    )
    description: Annotated[str, StringConstraints(max_length=4_000)] = Field(
        "", description="Free text; may contain personal data: stored, never logged."
    )


class SecurityAlert(Envelope):
    """Inbound: a detecting system raised an alert on a tenant's system or accounts."""

    type: Literal["security.alert"] = "security.alert"
    version: Literal[1] = 1
    payload: SecurityAlertPayload


class IncidentFacts(Frozen):
    """What the tenant needs to know of an incident, at the time of the event."""

    incident_id: IncidentId
    status: IncidentStatus
    severity: Severity
    severity_score: float = Field(description="ENISA score: DPC x EI + CB.")
    source: AlertSource
    category: AlertCategory
    target_system: SystemName
    personal_data_involved: PersonalData
    data_categories: list[DataCategory]
    alert_count: int = Field(ge=1)
    subject_count: int = Field(ge=0)
    first_detected_at: UtcDatetime
    last_detected_at: UtcDatetime


class IncidentOpenedPayload(Frozen):
    incident: IncidentFacts
    cause_alert_id: AlertId


class IncidentOpened(Envelope):
    """Outbound: a new incident for the tenant (POPIA s21(2): told at once)."""

    type: Literal["incident.opened"] = "incident.opened"
    version: Literal[1] = 1
    payload: IncidentOpenedPayload


class IncidentUpdatedPayload(Frozen):
    incident: IncidentFacts
    changes: list[str] = Field(description="What changed: status, severity, subjects...")
    cause: str = Field(description="alert:<alert_id>, operator:<name> or sweep.")


class IncidentUpdated(Envelope):
    """Outbound: an incident's status, severity, compromise or subjects changed."""

    type: Literal["incident.updated"] = "incident.updated"
    version: Literal[1] = 1
    payload: IncidentUpdatedPayload


class IncidentCompromisePayload(Frozen):
    incident_id: IncidentId
    compromise: Compromise
    breach_type: BreachType
    data_categories: list[DataCategory]
    subject_count: int = Field(ge=0)
    subjects_notified: int = Field(ge=0, description="Subjects sent a notice or update now.")
    aware_at: UtcDatetime = Field(description="Start of the GDPR art 33 72-hour clock.")
    regulator_due_at: UtcDatetime
    unauthorised_party_known: bool


class IncidentCompromise(Envelope):
    """Outbound: reasonable grounds to believe personal information was compromised.

    POPIA s22(1): the responsible party must tell the Information Regulator and the
    subjects; the regulator report is drafted by privacyops (``incidents report``).
    """

    type: Literal["incident.compromise"] = "incident.compromise"
    version: Literal[1] = 1
    payload: IncidentCompromisePayload


class AccountLockPayload(Frozen):
    account_id: AccountId
    target_system: SystemName
    incident_id: IncidentId
    reason: AlertCategory


class AccountLock(Envelope):
    """Outbound command: lock one account suspected of takeover (protective action)."""

    type: Literal["account.lock"] = "account.lock"
    version: Literal[1] = 1
    payload: AccountLockPayload


class IncidentEscalatedPayload(Frozen):
    incident_id: IncidentId
    severity: Severity
    severity_score: float
    status: IncidentStatus
    contact: str = Field(description="The on-call security contact (settings).")
    decision_needed: Literal["personal_data_involvement"] | None = Field(
        None,
        description="Set when the incident scores high or very high while nobody has said "
        "whether personal information is involved: someone must decide now whether there "
        "are reasonable grounds to believe it was compromised (POPIA s22(1)); "
        "`privacyops incidents confirm` records a compromise.",
    )


class IncidentEscalated(Envelope):
    """Outbound: a high or very high severity incident for the on-call security contact."""

    type: Literal["incident.escalated"] = "incident.escalated"
    version: Literal[1] = 1
    payload: IncidentEscalatedPayload


INBOUND: tuple[type[Envelope], ...] = (SecurityAlert,)
OUTBOUND: tuple[type[Envelope], ...] = (
    IncidentOpened,
    IncidentUpdated,
    IncidentCompromise,
    AccountLock,
    IncidentEscalated,
)
