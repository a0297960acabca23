"""The runtime's own consumer of admin actions: ``admin.action`` -> ``audit_log``.

Every ``Service`` runs it beside its workers (``AUDIT`` is the queue suffix), so
an admin command's audit event reaches the audit log of the store the service
uses, whatever store file the command itself opened (issue 11, C7). The
operator named in the event must be the AMQP ``user_id`` the broker stamped on
it (the publishing connection's user): a mismatch is ``unauthorized`` and
dead-lettered. ``report`` is how a command publishes the event; it is confirmed
(publisher confirms, ``mandatory``) before the command acts: no event, no action.

It also signs the audit chain's heads every ``audit_checkpoint_interval_s``
(``infra/audit/checkpoints.py``, issue 16): each service checks on every sweep
whether the interval has passed; two services checkpointing at once make one
checkpoint per head (the head's row lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

import structlog

from infra.audit import checkpoints
from infra.keys import AuditSigner
from infra.rabbit import ConfirmedPublisher, url_user
from infra.redaction import redact
from infra.runtime.tables import AUDIT_REPORTED
from infra.runtime.worker import Effects, Resources, Sink, Worker, handles
from infra.store import Store, Transaction
from messages.admin import AdminAction, AdminActionPayload
from messages.envelope import Envelope
from messages.errors import Unauthorized
from messages.names import Names
from messages.registry import encode

#: The queue suffix (``<ns>.audit``) and the worker name in the runtime's tables.
AUDIT = "audit"


class AuditWorker(Worker):
    """Writes reported admin actions into ``audit_log`` (the runtime's table)."""

    name: ClassVar[str] = AUDIT
    periodic: ClassVar[bool] = True

    def __init__(self) -> None:
        self._tx: Transaction | None = None
        self._signer: AuditSigner | None = None
        self._interval_s = 0.0
        self._last: datetime | None = None

    async def open(self, resources: Resources) -> None:
        self._signer = resources.keys.audit if resources.keys else None
        self._interval_s = resources.settings.audit_checkpoint_interval_s

    async def tick(self, store: Store, sink: Sink, now: datetime) -> None:
        """Checkpoint every tenant's chain head once the interval has passed."""
        if self._signer is None:
            return
        if self._last is None:  # the first one an interval after start, not at every start
            self._last = now
            return
        if (now - self._last).total_seconds() < self._interval_s:
            return
        self._last = now
        made = await checkpoints.make(store, self._signer, sink, now=now)
        if made:
            structlog.get_logger("privacyops.audit").info(
                "audit_checkpoints_made", tenants=len(made)
            )

    @handles(AdminAction)
    async def admin_action(self, message: AdminAction, effects: Effects) -> None:
        """The audit row, actor ``operator:<broker user>``, once per event (inbox)."""
        p = message.payload
        user = effects.sender.broker_user if effects.sender else None
        if user != p.operator:
            raise Unauthorized("admin.action not published by the operator it names")
        report_id = str(message.message_id)
        if await self._recorded(message.tenant_id, report_id):
            return  # the command's own row is in this store already
        effects.actor = f"operator:{p.operator}"
        effects.message_id = p.target_id
        effects.correlation_id = report_id
        effects.audit(p.action, p.subject_ref, reported_via="broker", **p.details)

    async def prepare(self, tx: Transaction, messages: Sequence[Envelope]) -> None:
        self._tx = tx

    async def _recorded(self, tenant_id: str, report_id: str) -> bool:
        assert self._tx is not None, "prepare() runs before the handlers"
        return await self._tx.fetchone(AUDIT_REPORTED, (tenant_id, report_id)) is not None


async def report(
    publisher: ConfirmedPublisher,
    names: Names,
    tenant_id: str,
    action: str,
    subject_ref: str | None,
    target_id: str | None,
    *,
    report_id: UUID | None = None,
    **details: Any,
) -> None:
    """Publish one admin action (confirmed) as the publisher's broker user.

    A command that also writes the audit row into the store it opened passes the same
    ``report_id`` as that row's ``correlation_id`` (and commits the row first): the
    audit consumer then writes nothing more when the two stores are the same.
    """
    operator = publisher.user_id or "unknown"
    event = AdminAction(
        message_id=report_id or uuid4(),
        tenant_id=tenant_id,
        payload=AdminActionPayload(
            action=action,
            operator=operator,
            subject_ref=subject_ref,
            target_id=target_id,
            details=redact(details),
        ),
    )
    await publisher.publish(
        names.internal, event.type, encode(event), message_id=str(event.message_id)
    )


__all__ = ["AUDIT", "AuditWorker", "report", "url_user"]
