"""Data-subject request messages (POPIA s23-s25, s11, s14; GDPR art 12-21; DOMAIN.md 1).

Inbound from upstream (the tenant's portal, call centre or mail room):

* ``dsr.requested``: a subject exercises a right; ``kind`` picks the right and
  the matching ``details`` model;
* ``dsr.verified``: the subject's identity has been verified; a request waiting
  for it continues;
* ``dsr.extended``: the tenant extends the deadline, with a reason.

Outbound, for recipients and ops:

* ``subject.rectified`` / ``subject.erased``: tell the recipients the data was
  disclosed to (POPIA s24(3), GDPR art 19);
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
    """Which law the request is made under: it sets the extension allowed (DOMAIN.md 1)."""

    POPIA = "popia"
    GDPR = "gdpr"


class SubjectIdentifiers(Frozen):
    """Who the request is about: the opaque reference, or an identifier to look it up by."""

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
    method: Annotated[str, StringConstraints(min_length=2, max_length=64)] = Field(
        examples=["id_document_and_selfie"]
    )
    verified_at: UtcDatetime


class DsrVerified(Envelope):
    """Inbound: the requester's identity was verified; a waiting request continues."""

    type: Literal["dsr.verified"] = "dsr.verified"
    version: Literal[1] = 1
    payload: DsrVerifiedPayload

    #: Only a key with ``may_assert_verification`` may send it (DOMAIN.md 5).
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


class SubjectErased(Envelope):
    """Outbound: recipients of the subject's data must erase it too (GDPR art 17(2), 19)."""

    type: Literal["subject.erased"] = "subject.erased"
    version: Literal[1] = 1
    payload: SubjectChangedPayload


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
    DsrOverdue,
    PortabilityHandover,
)
