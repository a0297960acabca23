"""A data-subject request as stored: its state, its transitions, and how it is saved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import TypeAdapter

from infra.runtime.worker import Effects
from infra.store import Transaction
from messages.dsr import Details, Regime, RequestKind
from messages.notices import NoticeChannel
from workers.dsr.rules import Status
from workers.dsr.tables import REQUEST_INSERT, TRANSITION_INSERT

DETAILS: TypeAdapter[Any] = TypeAdapter(Details)

_COLUMNS = (
    "request_id, kind, regime, subject_ref, status, identity_verified, received_at, due_on,"
    " extended, reply_channel, details, outcome, verified_by, verification_method, verified_at,"
    " reply_addresses"
)


@dataclass
class Request:
    tenant_id: str
    request_id: str
    kind: RequestKind
    regime: Regime
    subject_ref: str | None
    status: Status
    verified: bool
    received_at: datetime
    due_on: date
    reply_channel: str
    details: Any
    extended: bool = False
    outcome: dict[str, Any] | None = None
    verified_by: str | None = None
    verification_method: str | None = None
    verified_at: datetime | None = None
    #: Where answers go (``workers/dsr/replies.py``): sealed as stored, and opened in memory.
    reply_addresses: str | None = field(default=None, repr=False)
    addresses: dict[NoticeChannel, str] = field(default_factory=dict, repr=False)
    stored: bool = False
    transitions: list[tuple[Status | None, Status, str]] = field(default_factory=list)

    def move(self, to: Status, reason: str) -> None:
        """Record a transition with what, when (at save) and why."""
        self.transitions.append(
            (self.status if self.transitions or self.stored else None, to, reason)
        )
        self.status = to

    def note(self, reason: str) -> None:
        """A change that keeps the status (an extension), kept in the same history."""
        self.transitions.append((self.status, self.status, reason))

    def save(self, effects: Effects, message_id: str) -> None:
        now = effects.now.isoformat()
        if not self.stored:
            effects.write(
                REQUEST_INSERT,
                (
                    self.tenant_id,
                    self.request_id,
                    self.kind.value,
                    self.regime.value,
                    self.subject_ref,
                    self.status.value,
                    int(self.verified),
                    self.received_at.isoformat(),
                    self.due_on.isoformat(),
                    self.reply_channel,
                    DETAILS.dump_json(self.details).decode(),
                    message_id,
                    now,
                ),
            )
        effects.write(
            "UPDATE dsr_requests SET status = ?, identity_verified = ?, due_on = ?, extended = ?,"
            " outcome = ?, verified_by = ?, verification_method = ?, verified_at = ?,"
            " reply_addresses = ?, updated_at = ? WHERE tenant_id = ? AND request_id = ?",
            (
                self.status.value,
                int(self.verified),
                self.due_on.isoformat(),
                int(self.extended),
                json.dumps(self.outcome, default=str) if self.outcome is not None else None,
                self.verified_by,
                self.verification_method,
                self.verified_at.isoformat() if self.verified_at else None,
                self.reply_addresses,
                now,
                self.tenant_id,
                self.request_id,
            ),
        )
        for before, after, reason in self.transitions:
            effects.write(
                TRANSITION_INSERT,
                (
                    self.tenant_id,
                    self.request_id,
                    now,
                    before.value if before else None,
                    after.value,
                    reason,
                ),
            )
        self.transitions.clear()
        self.stored = True


async def load(tx: Transaction, tenant_id: str, request_id: str) -> Request | None:
    """The request, locked for the rest of the transaction: one process works on it at a time."""
    await tx.lock(f"dsr:request:{tenant_id}:{request_id}")
    row = await tx.fetchone(
        f"SELECT {_COLUMNS} FROM dsr_requests WHERE tenant_id = ? AND request_id = ?",
        (tenant_id, request_id),
    )
    if row is None:
        return None
    (
        rid,
        kind,
        regime,
        subject,
        status,
        verified,
        received,
        due,
        extended,
        reply,
        details,
        outcome,
        verified_by,
        method,
        verified_at,
        reply_addresses,
    ) = row
    return Request(
        tenant_id=tenant_id,
        request_id=rid,
        kind=RequestKind(kind),
        regime=Regime(regime),
        subject_ref=subject,
        status=Status(status),
        verified=bool(verified),
        received_at=datetime.fromisoformat(received),
        due_on=date.fromisoformat(due),
        reply_channel=reply,
        details=DETAILS.validate_json(details),
        extended=bool(extended),
        outcome=json.loads(outcome) if outcome else None,
        verified_by=verified_by,
        verification_method=method,
        verified_at=datetime.fromisoformat(verified_at) if verified_at else None,
        reply_addresses=reply_addresses,
        stored=True,
    )
