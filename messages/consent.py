"""Marketing-consent messages (POPIA s69; GDPR art 7(3)).

See docs/rules.md "Direct-marketing consent".

``consent.changed`` comes in from upstream systems: one channel's consent for
one subject was granted or withdrawn, with where it came from and the evidence.
``consent.updated`` goes out downstream when the current state of a channel
changed, so that senders suppress or resume marketing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, IPvAnyAddress, StringConstraints

from messages.envelope import Envelope, Frozen, SubjectRef, UtcDatetime


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    WHATSAPP = "whatsapp"
    POST = "post"


class ConsentStatus(StrEnum):
    """``refused``: a person who is not a customer refused when asked (POPIA s69(2)(a)).

    Like ``withdrawn`` it forbids marketing; unlike it, it also means "never ask
    again": senders must not request this person's consent a second time.
    """

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    REFUSED = "refused"


class ConsentSource(StrEnum):
    """How the change reached the tenant: part of the evidence (GDPR art 7(1))."""

    WEB_FORM = "web_form"
    SMS_STOP_REPLY = "sms_stop_reply"
    EMAIL_UNSUBSCRIBE = "email_unsubscribe"
    CALL_CENTRE = "call_centre"
    PAPER_FORM = "paper_form"
    OBJECTION = "objection"
    DATA_SUBJECT_REQUEST = "data_subject_request"
    API = "api"


Purpose = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$"),
    Field(
        description="What the consent covers. Every purpose except the service purposes "
        "(service_messages, account_notices, payment_reminders) is direct marketing.",
        examples=["direct_marketing"],
    ),
]

#: The purpose an objection to direct marketing names (POPIA s11(3)(b), GDPR art 21(2)).
DIRECT_MARKETING = "direct_marketing"

#: Purposes that are not direct marketing: messages about the subject's own account.
#: Every other purpose counts as marketing (docs/rules.md: consent is per purpose, and an
#: objection to direct marketing covers every marketing purpose), so a purpose nobody
#: classified is protected as marketing rather than exposed as a service message.
SERVICE_PURPOSES = frozenset({"service_messages", "account_notices", "payment_reminders"})


def is_marketing(purpose: str) -> bool:
    """Whether a consent purpose is direct marketing (anything but a service purpose)."""
    return purpose not in SERVICE_PURPOSES


class Evidence(Frozen):
    """Proof of the change, kept in the history (GDPR art 7(1))."""

    reference: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="Where the proof lives upstream: form submission id, call recording id, "
        "inbound SMS id."
    )
    captured_by: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="System or agent reference that captured it."
    )
    wording: Annotated[str, StringConstraints(max_length=2_000)] | None = Field(
        None, description="The consent text the subject saw or heard."
    )
    ip_address: IPvAnyAddress | None = None


class ConsentChangedPayload(Frozen):
    subject_ref: SubjectRef
    channel: Channel
    purpose: Purpose = "direct_marketing"
    status: ConsentStatus
    source: ConsentSource
    evidence: Evidence


class ConsentChanged(Envelope):
    """Inbound: a subject granted or withdrew consent on one channel."""

    type: Literal["consent.changed"] = "consent.changed"
    version: Literal[1] = 1
    payload: ConsentChangedPayload


class ConsentUpdatedPayload(Frozen):
    subject_ref: SubjectRef
    channel: Channel
    purpose: Purpose
    status: ConsentStatus
    previous_status: ConsentStatus | None = Field(
        description="None when this is the first record for the channel."
    )
    effective_at: UtcDatetime = Field(description="occurred_at of the event that won.")
    source: ConsentSource
    cause_message_id: UUID = Field(description="message_id of the consent.changed applied.")


class ConsentUpdated(Envelope):
    """Outbound: the current consent state of a channel changed; suppress or resume."""

    type: Literal["consent.updated"] = "consent.updated"
    version: Literal[1] = 1
    payload: ConsentUpdatedPayload


#: Types upstream systems publish, and types privacyops publishes (see messages.registry).
INBOUND: tuple[type[Envelope], ...] = (ConsentChanged,)
OUTBOUND: tuple[type[Envelope], ...] = (ConsentUpdated,)
