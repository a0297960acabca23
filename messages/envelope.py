"""The versioned envelope every message travels in.

``message_id`` identifies one message (a redelivery keeps it, so it is the
dedupe key); ``type`` and ``version`` select the payload model; ``tenant_id``
scopes every effect; ``occurred_at`` is an aware UTC time at the source;
``correlation_id`` ties the messages of one business flow together.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

#: How far in the future an occurred_at may lie (clock skew between systems).
MAX_CLOCK_SKEW = timedelta(minutes=5)

_LONG_NUMBER = re.compile(r"^\d{9,}$")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _not_a_phone_or_id_number(value: str) -> str:
    # A reference made only of 9+ digits is most likely a phone or ID number:
    # personal data where an opaque reference belongs.
    if _LONG_NUMBER.match(value):
        raise ValueError("subject_ref must be an opaque reference, not a phone or ID number")
    return value


TenantId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$"),
    Field(description="The collection agency (tenant) that owns the data.", examples=["acme"]),
]
SubjectRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
    AfterValidator(_not_a_phone_or_id_number),
    Field(
        description="Opaque reference to the data subject in the tenant's records. Never a "
        "name, e-mail address, phone or ID number.",
        examples=["debtor-7f3a9c"],
    ),
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
CorrelationId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
    Field(description="Ties the messages of one business flow together."),
]


#: Fields a message on the wire must carry. The models give message_id and occurred_at
#: defaults for convenience when building a message, but a received message without them
#: could not be deduplicated (a redelivery would get a new id), so decoding requires them.
WIRE_REQUIRED = ("message_id", "type", "version", "tenant_id", "occurred_at", "payload")


def _wire_required(schema: dict[str, Any]) -> None:
    schema["required"] = [
        *WIRE_REQUIRED,
        *(f for f in schema.get("required", []) if f not in WIRE_REQUIRED),
    ]


class Frozen(BaseModel):
    """Base of every wire model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """Fields common to every message; subclasses pin ``type``, ``version`` and ``payload``."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_wire_required)

    message_id: UUID = Field(
        default_factory=uuid4, description="Unique per message; the deduplication key."
    )
    type: str = Field(description="Message type, e.g. consent.changed.")
    version: int = Field(ge=1, description="Schema version of this type.")
    tenant_id: TenantId
    occurred_at: UtcDatetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When it happened at the source; aware, stored as UTC.",
    )
    correlation_id: CorrelationId | None = None
    payload: Any

    #: True for a message whose only meaning is "this identity is verified" (dsr.verified):
    #: refused outright from a key that may not assert verification (docs/rules.md "Identity").
    only_asserts_identity: ClassVar[bool] = False

    def asserts_verified_identity(self) -> bool:
        """Whether the message claims the subject's identity was verified.

        See docs/rules.md "Identity"."""
        return self.only_asserts_identity

    @model_validator(mode="before")
    @classmethod
    def _complete_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("wire") and isinstance(data, dict):
            missing = [f for f in WIRE_REQUIRED if f not in data]
            if missing:
                raise ValueError(f"missing on the wire: {', '.join(missing)}")
        return data

    @model_validator(mode="after")
    def _not_in_the_future(self) -> Self:
        if self.occurred_at > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("occurred_at lies more than 5 minutes in the future")
        return self

    @property
    def routing_key(self) -> str:
        """Messages are routed by type on the topic exchange."""
        return self.type
