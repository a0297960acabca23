"""What a worker is to the runtime: a handler per message class, and its effects.

The one extension point for workers. A worker subclasses ``Worker``, names
itself, gives the schema of its tables and marks one method per message class it consumes::

    class ConsentWorker(Worker):
        name = "consent"
        schema = CONSENT

        @handles(ConsentChanged)
        async def changed(self, message: ConsentChanged, effects: Effects) -> None: ...

A message class is declared once, by the decorator: the queue's bindings, the
decoder's check and the dispatch all come from it, and a type no handler is
marked for is an ``UnknownMessageType`` everywhere.

A handler never writes to the store directly. It records its effects on an
``Effects`` object: rows, audit entries, downstream events, notices. The
runtime stages them into the batch's transaction only when the handler
returned without error, writes the inbox row beside them, and logs the audit
events and hands the events and notices to the outbox relay only after the
transaction committed. A failing message therefore leaves no trace but its
dead-letter copy.

Workers that act on the outside world (sending mail) set ``transactional =
False``: their handlers run between two short transactions instead of inside
the batch's (see ``infra/runtime/consumer.py``), and may commit their own
state through the store they receive in ``open``. That is the whole hook:
``open``/``close`` for resources, ``transactional`` for where handlers run.

Convention for handlers: decide first, then record. Any in-memory view a
worker keeps for the batch (see ``Worker.prepare``) is updated last.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar, get_args
from uuid import uuid4

import structlog

from config.settings import Settings
from infra.keys import Keys, Sealer
from infra.rabbit import ConfirmedPublisher
from infra.runtime.tables import AUDIT_INSERT, EVENT_INSERT, NOTICE_INSERT
from infra.store import Row, Store, Transaction
from infra.store.migrations import Schema
from messages.envelope import Envelope
from messages.errors import UnknownMessageType
from messages.names import Names
from messages.registry import encode

_HANDLES = "__privacyops_handles__"

M = TypeVar("M", bound=Envelope)
W = TypeVar("W", bound="Worker")
HandlerMethod = Callable[[W, M, "Effects"], Awaitable[None]]
BoundHandler = Callable[[Any, "Effects"], Awaitable[None]]


def handles(model: type[M]) -> Callable[[HandlerMethod[W, M]], HandlerMethod[W, M]]:
    """Mark a worker method as the handler of one message class (stackable)."""

    def mark(method: HandlerMethod[W, M]) -> HandlerMethod[W, M]:
        setattr(method, _HANDLES, (*getattr(method, _HANDLES, ()), model))
        return method

    return mark


def type_name(model: type[Envelope]) -> str:
    """The wire ``type`` a message class pins (its ``Literal`` default)."""
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


@dataclass(frozen=True)
class OutboundEvent:
    """A downstream event committed to the outbox, ready for the relay."""

    message_id: str
    tenant_id: str
    routing_key: str
    body: bytes


@dataclass(frozen=True)
class QueuedNotice:
    """A notice committed to the notification outbox, ready for the relay."""

    notice_id: str
    tenant_id: str
    subject_ref: str
    kind: str
    channel: str | None
    context: str
    cause_message_id: str | None
    created_at: str


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
    notices: list[QueuedNotice] = field(default_factory=list)
    log_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tenant_id: str = ""
    message_id: str | None = None
    correlation_id: str | None = None
    actor: str = ""
    #: Encrypts ``notify(sealed=...)``; set by the runtime from the notice key.
    sealer: Sealer | None = None
    #: Who signed the message (set by the runtime); None for sweeps and admin actions.
    sender: Sender | None = None

    @property
    def may_assert_verification(self) -> bool:
        """Whether the message's signer may assert a verified identity (docs/rules.md "Identity").

        True only for a key with ``may_assert_verification``, or when the process runs
        without a keyring (development, ``allow_unsigned``).
        """
        return self.sender is None or self.sender.may_assert_verification

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
        sealer: Sealer | None = None,
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
            sealer=sealer,
        )

    def write(self, sql: str, params: Row) -> None:
        self.writes.append((sql, params))

    def audit(self, action: str, subject_ref: str | None, **details: Any) -> None:
        """An audit row in the same transaction, and the same facts as a log event.

        A signed message's effects name the signing key (``signed_by``), so the audit
        says which publisher caused them, not only which worker applied them. The store
        links the row into the tenant's hash chain when it is written
        (``infra/audit/chain.py``): ``details`` name references, counts and keyed
        digests, never personal data, so that erasure never touches the chain.
        """
        if self.sender is not None and self.sender.key_id:
            details.setdefault("signed_by", self.sender.key_id)
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
            EVENT_INSERT,
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
        self,
        subject_ref: str,
        kind: str,
        channel: str | None,
        context: dict[str, Any],
        *,
        sealed: Mapping[str, str] | None = None,
    ) -> str:
        """A notice for the subject, queued in the notification outbox; its notice_id.

        ``context``: facts for the template (references, dates, reasons), stored in
        clear and readable by admins (``notices list``). ``sealed``: secrets the notice
        must carry to the subject, such as a download code (``{"token": ...}``) or an
        address fixed now rather than at send time (``{"address": ...}``, see
        ``SEALED_ADDRESS``); they are encrypted with the notice key into the row's
        ``sealed`` column, never put in ``notice.send`` or a log, merged into the
        template context only by the sending worker, and cleared once ``sent`` is
        recorded. Needs ``sealer`` (the runtime sets it; sweeps and admin commands
        pass ``Keys.notice``).
        """
        sealed_text = None
        if sealed:
            if self.sealer is None:
                raise RuntimeError("Effects.notify(sealed=...) needs a sealer (Keys.notice)")
            sealed_text = self.sealer.seal(json.dumps(dict(sealed), sort_keys=True).encode())
        notice = QueuedNotice(
            str(uuid4()),
            self.tenant_id,
            subject_ref,
            kind,
            channel,
            json.dumps(context, default=str, sort_keys=True),
            self.message_id,
            self.now.isoformat(),
        )
        self.write(
            NOTICE_INSERT,
            (
                notice.notice_id,
                notice.tenant_id,
                notice.subject_ref,
                notice.kind,
                notice.channel,
                notice.context,
                notice.cause_message_id,
                notice.created_at,
                sealed_text,
            ),
        )
        self.notices.append(notice)
        return notice.notice_id


#: The ``sealed`` key of an address fixed when the notice was queued (e.g. the old address
#: told of a contact-point change); the sending worker uses it instead of looking one up.
SEALED_ADDRESS = "address"


@dataclass(frozen=True)
class Sender:
    """Who a message came from, as the runtime established it (signature, broker user)."""

    key_id: str | None
    may_assert_verification: bool
    broker_user: str | None = None


class Sink(Protocol):
    """Takes committed effects' events and notices for publishing (the outbox relays)."""

    def submit(self, batch: Sequence[Effects]) -> None: ...


@dataclass(frozen=True)
class Resources:
    """What a worker may keep from the process that runs it (``Worker.open``)."""

    settings: Settings
    store: Store
    publisher: ConfirmedPublisher
    names: Names
    keys: Keys | None = None
    #: Where effects committed outside a message (a worker's own background work) are
    #: handed for publishing: the process's outbox relays.
    sink: Sink | None = None


class Worker:
    """One worker: a handler per message class, the tables it owns, its periodic work."""

    #: Queue suffix, log name, audit actor (``worker:<name>``).
    name: ClassVar[str]
    #: The worker's own tables, as migrations (``infra/store/migrations.py``).
    schema: ClassVar[Schema | None] = None
    #: False: handlers run outside the batch's transaction (they act on the outside world).
    transactional: ClassVar[bool] = True
    #: True when the worker has periodic work: ``tick`` runs every ``sweep_interval_s``.
    periodic: ClassVar[bool] = False
    #: Message class -> handler method name; built from ``@handles`` marks.
    handlers: ClassVar[Mapping[type[Envelope], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[type[Envelope], str] = {}
        for klass in reversed(cls.__mro__):  # a subclass's marks override its bases'
            own: dict[type[Envelope], str] = {}
            for attr_name, attr in vars(klass).items():
                for model in getattr(attr, _HANDLES, ()):
                    if model in own:
                        raise TypeError(f"{klass.__name__}: two handlers for {model.__name__}")
                    own[model] = attr_name
            found.update(own)
        cls.handlers = found

    @classmethod
    def message_types(cls) -> tuple[str, ...]:
        """The wire types the worker consumes, from its handlers."""
        return tuple(sorted(type_name(model) for model in cls.handlers))

    def bound_handlers(self) -> dict[type[Envelope], BoundHandler]:
        return {model: getattr(self, attr) for model, attr in self.handlers.items()}

    async def handle(self, message: Envelope, effects: Effects) -> None:
        """Dispatch one message to its handler (the runtime dispatches the same way)."""
        attr = self.handlers.get(type(message))
        if attr is None:
            raise UnknownMessageType(f"worker {self.name} has no handler for {message.type}")
        await getattr(self, attr)(message, effects)

    async def open(self, resources: Resources) -> None:
        """Acquire what the handlers need before consuming starts. Default: nothing."""

    async def close(self) -> None:
        """Release it, after consuming stopped. Default: nothing."""

    def committed(self, batch: Sequence[Effects]) -> None:
        """Called once a batch's effects are committed (background work may start on them).
        Must not block. Default: nothing."""

    async def tick(self, store: Store, sink: Sink, now: datetime) -> None:
        """Periodic work such as deadline and hold sweeps. Default: nothing."""

    async def gauges(self, store: Store, now: datetime) -> dict[str, float]:
        """Current figures for ops (overdue requests, open incidents). Default: none."""
        return {}

    async def prepare(self, tx: Transaction, messages: Sequence[Envelope]) -> None:
        """Load in one query whatever the batch's handlers will read. Default: nothing."""


async def commit_effects(store: Store, sink: Sink | None, *batch: Effects) -> None:
    """Commit standalone effects in one transaction, then announce them."""
    async with store.transaction() as tx:
        for effects in batch:
            tx.stage_all(effects.writes)
    announce(sink, *batch)


def announce(sink: Sink | None, *batch: Effects) -> None:
    """After commit: log the audit events and hand events and notices to the relays."""
    log = structlog.get_logger("privacyops.effects")
    for effects in batch:
        if not effects.log_events:
            continue
        with structlog.contextvars.bound_contextvars(
            worker=effects.worker, tenant=effects.tenant_id, actor=effects.actor
        ):
            for event, fields in effects.log_events:
                log.info(event, **fields)
    if sink is not None:
        sink.submit(batch)
