"""Data-subject request messages (POPIA s23-s25, s11, s14; GDPR art 12-21).

See docs/rules.md "Data-subject requests".

Inbound from upstream (the tenant's portal, call centre or mail room):

* ``dsr.requested``: a subject exercises a right; ``kind`` picks the right and
  the matching ``details`` model;
* ``dsr.verified``: the subject's identity has been verified; a request waiting
  for it continues;
* ``dsr.extended``: the tenant extends the deadline, with a reason.

Outbound, for recipients and ops:

* ``subject.rectified`` / ``subject.erased`` / ``subject.restricted`` /
  ``subject.restriction_lifted`` / ``subject.objected``: tell the recipients the
  data was disclosed to (POPIA s24(3), GDPR art 19, 21);
* ``dsr.overdue``: a request is due within 7 days or past due.

Subject identifiers other than the opaque ``subject_ref`` (ID number, e-mail,
phone) are personal data: they travel in the message but never reach a log.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from messages.envelope import Envelope, Frozen, SubjectRef, UtcDatetime

RequestId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"),
    Field(description="The tenant's reference for the request; unique per tenant."),
]
FieldName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"),
    Field(description="table.column as named in the data map.", examples=["debtors.last_name"]),
]
Purpose = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit test that South African ID numbers carry."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _valid_sa_id(value: str) -> str:
    if not luhn_ok(value):
        raise ValueError("id_number fails the check digit")
    return value


SaIdNumber = Annotated[str, StringConstraints(pattern=r"^\d{13}$"), AfterValidator(_valid_sa_id)]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}\.[A-Za-z]{2,}$")]


class RequestKind(StrEnum):
    ACCESS = "access"
    RECTIFICATION = "rectification"
    ERASURE = "erasure"
    RESTRICTION = "restriction"
    OBJECTION = "objection"
    PORTABILITY = "portability"


class Regime(StrEnum):
    """Which law the request is made under: it sets the deadlines (docs/rules.md "Deadlines")."""

    POPIA = "popia"
    GDPR = "gdpr"


class SubjectIdentifiers(Frozen):
    """Who the request is about: the opaque reference, or an identifier to look it up by.

    When both ``subject_ref`` and ``id_number`` are given, the DSR worker checks that
    they name the same person and refuses the request when they do not.
    """

    subject_ref: SubjectRef | None = None
    id_number: SaIdNumber | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _one_identifier(self) -> Self:
        if not (self.subject_ref or self.id_number):
            raise ValueError("subject needs subject_ref or id_number")
        return self


class ReplyTo(Frozen):
    """Where the subject wants answers: a channel of their contact points."""

    channel: Literal["email", "sms", "post"] = "email"


class Correction(Frozen):
    field: FieldName
    value: Annotated[str, StringConstraints(max_length=500)]


class RectificationDetails(Frozen):
    kind: Literal["rectification"] = "rectification"
    corrections: list[Correction] = Field(min_length=1, max_length=50)
    insist: bool = Field(
        True, description="Subject insists: a refused correction leaves a note (POPIA s24)."
    )


class ObjectionDetails(Frozen):
    kind: Literal["objection"] = "objection"
    purposes: list[Purpose] = Field(min_length=1, examples=[["direct_marketing"]])
    grounds: Annotated[str, StringConstraints(max_length=2_000)] | None = None


class RestrictionDetails(Frozen):
    kind: Literal["restriction"] = "restriction"
    categories: list[Category] = Field(
        default_factory=list, description="Data categories to restrict; empty = all."
    )
    grounds: Literal[
        "accuracy_contested", "unlawful_processing", "legal_claims", "objection_pending"
    ] = "accuracy_contested"
    lift: bool = Field(False, description="Ask to lift an earlier restriction instead.")


class PortabilityDetails(Frozen):
    kind: Literal["portability"] = "portability"
    destination: Annotated[str, StringConstraints(pattern=r"^https://\S{4,500}$")] | None = Field(
        None, description="Another organisation's endpoint to hand the export to."
    )


class NoDetails(Frozen):
    kind: Literal["access", "erasure"]


Details = Annotated[
    RectificationDetails | ObjectionDetails | RestrictionDetails | PortabilityDetails | NoDetails,
    Field(discriminator="kind"),
]


class DsrRequestedPayload(Frozen):
    request_id: RequestId
    kind: RequestKind
    regime: Regime = Regime.POPIA
    subject: SubjectIdentifiers
    identity_verified: bool = False
    received_at: UtcDatetime
    details: Details
    reply_to: ReplyTo = ReplyTo()

    @model_validator(mode="after")
    def _details_match_kind(self) -> Self:
        if self.details.kind != self.kind.value:
            raise ValueError("details.kind must equal kind")
        return self


class DsrRequested(Envelope):
    """Inbound: a data subject exercises a right."""

    type: Literal["dsr.requested"] = "dsr.requested"
    version: Literal[1] = 1
    payload: DsrRequestedPayload

    def asserts_verified_identity(self) -> bool:
        """``identity_verified: true`` is honoured only from a key allowed to assert it."""
        return self.payload.identity_verified


class DsrVerifiedPayload(Frozen):
    request_id: RequestId
    verified_by: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{1,127}$")
    ] = Field(
        description="Who verified the identity: a staff or system reference (never a name); "
        "kept with the request as the evidence of the check.",
        examples=["agent-17", "kyc-service"],
    )
    method: Annotated[str, StringConstraints(min_length=2, max_length=64)] = Field(
        description="How the identity was verified.", examples=["id_document_and_selfie"]
    )
    verified_at: UtcDatetime


class DsrVerified(Envelope):
    """Inbound: the requester's identity was verified; a waiting request continues."""

    type: Literal["dsr.verified"] = "dsr.verified"
    version: Literal[1] = 1
    payload: DsrVerifiedPayload

    #: Only a key with ``may_assert_verification`` may send it (docs/rules.md "Identity").
    only_asserts_identity: ClassVar[bool] = True


class DsrExtendedPayload(Frozen):
    request_id: RequestId
    months: int = Field(ge=1, le=2, description="GDPR art 12(3): at most two further months.")
    reason: Annotated[str, StringConstraints(min_length=10, max_length=2_000)]


class DsrExtended(Envelope):
    """Inbound: the deadline is extended, before it passes, with reasons for the subject."""

    type: Literal["dsr.extended"] = "dsr.extended"
    version: Literal[1] = 1
    payload: DsrExtendedPayload


class SubjectChangedPayload(Frozen):
    request_id: RequestId
    subject_ref: SubjectRef
    tables: list[str]
    fields: list[str] = Field(default_factory=list, description="Names only, never values.")
    recipients: list[str]


class SubjectRectified(Envelope):
    """Outbound: recipients of the subject's data must apply the corrections (s24(3))."""

    type: Literal["subject.rectified"] = "subject.rectified"
    version: Literal[1] = 1
    payload: SubjectChangedPayload


class SubjectErasedPayload(SubjectChangedPayload):
    keep_suppressing: Literal[True] = Field(
        True,
        description="Marketing senders must erase the subject's data but keep suppressing "
        "them: the opt-out is never forgotten (NCR reg 58(4)); a consent dated before the "
        "erasure must not make the subject contactable again.",
    )
    suppressed_channels: list[str] = Field(
        default_factory=list, description="Channels on which the subject stays suppressed."
    )


class SubjectErased(Envelope):
    """Outbound: recipients must erase the data too, and keep suppressing (GDPR art 17(2), 19)."""

    type: Literal["subject.erased"] = "subject.erased"
    version: Literal[1] = 1
    payload: SubjectErasedPayload


class SubjectRestrictedPayload(Frozen):
    request_id: RequestId | None = Field(
        None, description="The restriction or erasure request; None for a retention hold."
    )
    subject_ref: SubjectRef
    scopes: list[str] = Field(description="Restricted scopes: table or category names, * = all.")
    tables: list[str] = Field(description="Tables of the data map the scopes cover.")
    grounds: str = Field(
        description="Why: the subject's grounds (GDPR art 18(1)), or 'retention' for data kept "
        "under a legal hold after an erasure request."
    )
    until: date | None = Field(None, description="When a retention hold ends, if known.")
    recipients: list[str]


class SubjectRestricted(Envelope):
    """Outbound: recipients must only store the data from now on (GDPR art 18, 19; s14(6))."""

    type: Literal["subject.restricted"] = "subject.restricted"
    version: Literal[1] = 1
    payload: SubjectRestrictedPayload


class SubjectRestrictionLiftedPayload(Frozen):
    subject_ref: SubjectRef
    scopes: list[str]
    tables: list[str]
    recipients: list[str]


class SubjectRestrictionLifted(Envelope):
    """Outbound: a restriction was lifted, after the subject was told (s14(8); GDPR art 19)."""

    type: Literal["subject.restriction_lifted"] = "subject.restriction_lifted"
    version: Literal[1] = 1
    payload: SubjectRestrictionLiftedPayload


class SubjectObjectedPayload(Frozen):
    request_id: RequestId
    subject_ref: SubjectRef
    outcomes: dict[Purpose, str] = Field(
        description="Purpose -> consent_withdrawn_on_every_channel (direct marketing: every "
        "marketing purpose, every channel), processing_stopped, or "
        "continued_required_by_legislation."
    )
    since: UtcDatetime = Field(description="When the objection was made: it applies from then.")
    recipients: list[str]


class SubjectObjected(Envelope):
    """Outbound: stop processing for the purposes objected to (POPIA s11(3); GDPR art 21)."""

    type: Literal["subject.objected"] = "subject.objected"
    version: Literal[1] = 1
    payload: SubjectObjectedPayload


class DsrOverduePayload(Frozen):
    request_id: RequestId
    kind: RequestKind
    status: str
    due_on: date
    state: Literal["due_soon", "overdue"]
    deemed_refused: bool = Field(
        False, description="PAIA s58: a POPIA access request not answered in time is refused."
    )


class DsrOverdue(Envelope):
    """Outbound, for ops: a request is due within 7 days or overdue."""

    type: Literal["dsr.overdue"] = "dsr.overdue"
    version: Literal[1] = 1
    payload: DsrOverduePayload


class PortabilityHandoverPayload(Frozen):
    request_id: RequestId
    subject_ref: SubjectRef
    destination: Annotated[str, StringConstraints(pattern=r"^https://\S{4,500}$")]
    token: Annotated[str, StringConstraints(min_length=20, max_length=200)] = Field(
        description="Download token of the package; a secret: consumers must not log it."
    )
    expires_at: UtcDatetime


class PortabilityHandover(Envelope):
    """Outbound: hand a portability package to the organisation the subject named (art 20(2))."""

    type: Literal["dsr.portability_handover"] = "dsr.portability_handover"
    version: Literal[1] = 1
    payload: PortabilityHandoverPayload


INBOUND: tuple[type[Envelope], ...] = (DsrRequested, DsrVerified, DsrExtended)
OUTBOUND: tuple[type[Envelope], ...] = (
    SubjectRectified,
    SubjectErased,
    SubjectRestricted,
    SubjectRestrictionLifted,
    SubjectObjected,
    DsrOverdue,
    PortabilityHandover,
)
