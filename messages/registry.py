"""Decoding and encoding in one place (STYLE 5).

``decode`` turns raw bytes into the envelope model named by its ``type``, or
raises a ``PermanentError`` whose text names the model's fields, never values
and never a key the sender made up, so that it can go into a dead-letter header.

Adding a message family: write its module (models plus ``INBOUND``,
``OUTBOUND`` and, for types privacyops sends to itself, ``INTERNAL``) and add
it to ``FAMILIES`` below; that one line is all the contract needs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union, cast, get_args

from pydantic import Field, TypeAdapter, ValidationError

from messages import admin, audit, consent, dsr, notices, security
from messages.envelope import Envelope
from messages.errors import InvalidMessage, UndecodableMessage, UnknownMessageType

Publisher = Literal["upstream", "privacyops", "internal"]

#: The message families; each module lists its types in ``INBOUND`` and ``OUTBOUND``
#: (and, optionally, ``INTERNAL``: published and consumed by privacyops itself).
FAMILIES = (consent, dsr, notices, security, admin, audit)


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


def publisher_of(message_type: str) -> Publisher | None:
    """Who publishes a type: ``upstream``, ``privacyops`` or ``internal``; None if unknown."""
    known = MESSAGE_TYPES.get(message_type)
    return known[1] if known else None


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


_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def _where(error: Any) -> str:
    """The error's location by field names; a key the sender chose is never echoed."""
    # The first element of loc is the union member (the type name); skip it.
    path = list(error["loc"][1:])
    if error["type"] == "extra_forbidden" and path:
        path[-1] = "(unknown field)"
    shown = [
        p if isinstance(p, int) or _NAME.match(str(p)) or p == "(unknown field)" else "?"
        for p in path
    ]
    return ".".join(str(p) for p in shown) or "message"


def _summary(errors: list[Any]) -> str:
    parts = [f"{_where(error)}: {error['msg']}" for error in errors[:10]]
    more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
    return "; ".join(parts) + more
