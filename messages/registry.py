"""Decoding and encoding in one place (STYLE 5).

``decode`` turns raw bytes into the envelope model named by its ``type``, or
raises a ``PermanentError`` whose text names fields, never values, so that it
can go into a dead-letter header as it is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, cast, get_args

from pydantic import Field, TypeAdapter, ValidationError

from infra.errors import InvalidMessage, UndecodableMessage, UnknownMessageType
from infra.redaction import redact_text
from messages import consent, dsr, notices, security
from messages.envelope import Envelope

Publisher = Literal["upstream", "privacyops", "internal"]

#: The message families; each module lists its types in ``INBOUND`` and ``OUTBOUND``
#: (and, optionally, ``INTERNAL``: published and consumed by privacyops itself).
FAMILIES = (consent, dsr, notices, security)


def _types() -> dict[str, tuple[type[Envelope], Publisher]]:
    found: dict[str, tuple[type[Envelope], Publisher]] = {}
    for family in FAMILIES:
        directions = (
            (family.INBOUND, "upstream"),
            (family.OUTBOUND, "privacyops"),
            (getattr(family, "INTERNAL", ()), "internal"),
        )
        for models, publisher in directions:
            for model in models:
                (name,) = get_args(model.model_fields["type"].annotation)
                found[name] = (model, cast(Publisher, publisher))
    return found


#: Every message type the contract knows, by type name, with who publishes it.
MESSAGE_TYPES: dict[str, tuple[type[Envelope], Publisher]] = _types()

_MODELS = tuple(model for model, _ in MESSAGE_TYPES.values())
_ADAPTER: TypeAdapter[Envelope] = TypeAdapter(
    Annotated[Union[_MODELS], Field(discriminator="type")]  # type: ignore[arg-type]  # noqa: UP007
)


def decode(body: bytes) -> Envelope:
    """Validate ``body`` against the contract; raise a permanent error if it does not fit."""
    try:
        return _ADAPTER.validate_json(body, context={"wire": True})
    except ValidationError as exc:
        raise _translate(exc) from None


def encode(message: Envelope) -> bytes:
    return message.model_dump_json().encode()


def _translate(exc: ValidationError) -> InvalidMessage | UndecodableMessage | UnknownMessageType:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds or "json_type" in kinds:
        return UndecodableMessage("body is not a JSON object")
    if kinds == {"model_attributes_type"} or kinds == {"dict_type"}:
        return UndecodableMessage("body is not a JSON object")
    if "union_tag_not_found" in kinds:
        return InvalidMessage("type: field required")
    if "union_tag_invalid" in kinds:
        return UnknownMessageType(f"no contract for this type; known: {sorted(MESSAGE_TYPES)}")
    return InvalidMessage(_summary(errors))


def _summary(errors: list[Any]) -> str:
    parts = []
    for error in errors[:10]:
        # The first element of loc is the union member (the type name); skip it.
        loc = ".".join(str(p) for p in error["loc"][1:]) or "message"
        parts.append(f"{redact_text(loc)}: {redact_text(str(error['msg']))}")
    more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
    return "; ".join(parts) + more
