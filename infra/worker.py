"""What a worker is to the runtime: a handler per message type, and its effects.

A handler never writes to the store directly. It records its effects on an
``Effects`` object: rows, audit entries, downstream events, notices. The
runtime stages them into the batch's transaction only when the handler
returned without error, writes the inbox row beside them, and logs the audit
events only after the transaction committed. A failing message therefore
leaves no trace but its dead-letter copy.

Convention for handlers: decide first, then record. Any in-memory view a
worker keeps for the batch (see ``Worker.prepare``) is updated last.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from uuid import uuid4

import structlog

from infra.store import Row, SqliteStore, Transaction
from messages.envelope import Envelope
from messages.registry import encode

AUDIT_INSERT = (
    "INSERT INTO audit_log (tenant_id, recorded_at, actor, action, subject_ref, message_id,"
    " correlation_id, attempt, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
OUTBOX_INSERT = (
    "INSERT INTO event_outbox (message_id, tenant_id, routing_key, body, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
NOTICE_INSERT = (
    "INSERT INTO notification_outbox (notice_id, tenant_id, subject_ref, kind, channel,"
    " context, cause_message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class OutboundEvent:
    """A downstream event committed to the outbox, ready for the relay."""

    message_id: str
    tenant_id: str
    routing_key: str
    body: bytes


@dataclass
class Effects:
    """Everything one message changes; applied all together or not at all.

    Built by the runtime for each message. Periodic sweeps and admin commands,
    which act without a message, build one with ``Effects.standalone`` and
    commit it with ``commit_effects``.
    """

    worker: str
    message: Envelope | None
    attempt: int
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    writes: list[tuple[str, Row]] = field(default_factory=list)
    events: list[OutboundEvent] = field(default_factory=list)
    log_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tenant_id: str = ""
    message_id: str | None = None
    correlation_id: str | None = None
    actor: str = ""

    def __post_init__(self) -> None:
        if self.message is not None:
            self.tenant_id = self.message.tenant_id
            self.message_id = str(self.message.message_id)
            self.correlation_id = self.message.correlation_id
        self.actor = self.actor or f"worker:{self.worker}"

    @classmethod
    def standalone(
        cls,
        worker: str,
        tenant_id: str,
        *,
        actor: str = "",
        correlation_id: str | None = None,
        now: datetime | None = None,
    ) -> Effects:
        """Effects of a sweep or an admin action: scoped to one tenant, no message."""
        return cls(
            worker=worker,
            message=None,
            attempt=0,
            now=now or datetime.now(UTC),
            tenant_id=tenant_id,
            correlation_id=correlation_id,
            actor=actor,
        )

    def write(self, sql: str, params: Row) -> None:
        self.writes.append((sql, params))

    def audit(self, action: str, subject_ref: str | None, **details: Any) -> None:
        """An audit row in the same transaction, and the same facts as a log event."""
        self.write(
            AUDIT_INSERT,
            (
                self.tenant_id,
                self.now.isoformat(),
                self.actor,
                action,
                subject_ref,
                self.message_id,
                self.correlation_id,
                self.attempt,
                json.dumps(details, default=str, sort_keys=True),
            ),
        )
        self.log_events.append((action, {"subject_ref": subject_ref, **details}))

    def emit(self, event: Envelope) -> None:
        """A downstream event, written to the outbox and published after commit."""
        outbound = OutboundEvent(str(event.message_id), event.tenant_id, event.type, encode(event))
        self.write(
            OUTBOX_INSERT,
            (
                outbound.message_id,
                outbound.tenant_id,
                outbound.routing_key,
                outbound.body,
                self.now.isoformat(),
            ),
        )
        self.events.append(outbound)

    def notify(
        self, subject_ref: str, kind: str, channel: str | None, context: dict[str, Any]
    ) -> None:
        """A notice for the subject, queued in the notification outbox."""
        self.write(
            NOTICE_INSERT,
            (
                str(uuid4()),
                self.tenant_id,
                subject_ref,
                kind,
                channel,
                json.dumps(context, default=str, sort_keys=True),
                self.message_id,
                self.now.isoformat(),
            ),
        )


class EventSink(Protocol):
    """Takes committed outbound events for publishing (the outbox relay)."""

    def submit(self, events: Sequence[OutboundEvent]) -> None: ...


class Worker(ABC):
    """One worker: the message types it consumes and the rule applied to each."""

    #: Queue suffix and log name.
    name: ClassVar[str]
    #: Message types bound to the worker's queue.
    handles: ClassVar[tuple[str, ...]]
    #: SQL creating the worker's own tables (idempotent).
    schema: ClassVar[str] = ""

    #: True when the worker has periodic work: ``tick`` runs every ``sweep_interval_s``.
    periodic: ClassVar[bool] = False

    async def tick(self, store: SqliteStore, sink: EventSink, now: datetime) -> None:  # noqa: B027
        """Periodic work such as deadline and hold sweeps. Default: nothing."""

    async def gauges(self, store: SqliteStore, now: datetime) -> dict[str, float]:
        """Current figures for ops (overdue requests, open incidents). Default: none."""
        return {}

    async def prepare(self, tx: Transaction, messages: Sequence[Envelope]) -> None:  # noqa: B027
        """Load in one query whatever the batch's handlers will read. Default: nothing."""

    @abstractmethod
    async def handle(self, message: Envelope, effects: Effects) -> None:
        """Apply the rule to one message, recording effects; raise a PrivacyOpsError to refuse."""


async def commit_effects(store: SqliteStore, sink: EventSink | None, *batch: Effects) -> None:
    """Commit standalone effects in one transaction, then announce them."""
    async with store.transaction() as tx:
        for effects in batch:
            tx.stage_all(effects.writes)
    announce(sink, *batch)


def announce(sink: EventSink | None, *batch: Effects) -> None:
    """After commit: log the audit events and hand the outbound events to the relay."""
    log = structlog.get_logger("privacyops.effects")
    events: list[OutboundEvent] = []
    for effects in batch:
        with structlog.contextvars.bound_contextvars(
            worker=effects.worker, tenant=effects.tenant_id, actor=effects.actor
        ):
            for event, fields in effects.log_events:
                log.info(event, **fields)
        events.extend(effects.events)
    if events and sink is not None:
        sink.submit(events)
