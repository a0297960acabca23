"""Signed heads of the audit chain, published so a rewrite of the store shows from outside.

privacyops signs each tenant's audit chain head periodically and on demand
(``privacyops audit checkpoint``) and publishes it on the outbound exchange as
``audit.checkpoint``. A copy kept by someone else (a downstream archive, the
broker's own queue) is evidence the store cannot take back: a chain rewritten after
a checkpoint no longer ends in the signed hash (``infra/audit/proof.py`` says how to
check it). Carries hashes and sequence numbers only, never personal data.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from messages.envelope import Envelope, Frozen

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class AuditCheckpointPayload(Frozen):
    seq: int = Field(ge=1, description="The chain position signed (the tenant's last row).")
    row_hash: Hex64 = Field(description="SHA-256 row hash at that position.")
    made_at: str = Field(
        max_length=64, description="When it was made, ISO 8601 text exactly as signed."
    )
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="The audit key that signed: first 16 hex digits of SHA-256(public key)."
    )
    algorithm: Literal["ed25519"] = "ed25519"
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]


class AuditCheckpoint(Envelope):
    """Outbound: a tenant's audit chain head, signed with the audit key."""

    type: Literal["audit.checkpoint"] = "audit.checkpoint"
    version: Literal[1] = 1
    payload: AuditCheckpointPayload


INBOUND: tuple[type[Envelope], ...] = ()
OUTBOUND: tuple[type[Envelope], ...] = (AuditCheckpoint,)
INTERNAL: tuple[type[Envelope], ...] = ()
