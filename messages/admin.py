"""Admin actions reported on the broker, so they reach the service's audit log.

An admin command (``privacyops dlq show --reveal``, ``dlq replay``, ``dsr
package``, ``incidents confirm``...) writes its audit row in the store it opened
*and* publishes one ``admin.action`` on the internal exchange, confirmed before
the action goes ahead. The service's runtime consumes it into its own
``audit_log`` (``infra/runtime/audit.py``), so a command pointed at another
store file still leaves a trace where the service keeps its audit.

The operator is the broker user the command authenticated as; the broker
refuses an AMQP ``user_id`` that is not the connection's user, and the audit
consumer refuses an ``admin.action`` whose ``operator`` is not its ``user_id``.
Details name references, counts and reasons (redacted), never personal data.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from messages.envelope import Envelope, Frozen, SubjectRef

Action = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
Operator = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]


class AdminActionPayload(Frozen):
    action: Action = Field(description="The audit action, e.g. dlq_revealed.")
    operator: Operator = Field(description="The broker user that ran the command.")
    subject_ref: SubjectRef | None = None
    target_id: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="The message, request or incident acted on."
    )
    details: dict[str, Any] = Field(default_factory=dict)


class AdminAction(Envelope):
    """Internal: an admin's action, for the service's audit log."""

    type: Literal["admin.action"] = "admin.action"
    version: Literal[1] = 1
    payload: AdminActionPayload


INBOUND: tuple[type[Envelope], ...] = ()
OUTBOUND: tuple[type[Envelope], ...] = ()
INTERNAL: tuple[type[Envelope], ...] = (AdminAction,)
