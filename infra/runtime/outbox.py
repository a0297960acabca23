"""The transactional outbox relay: one implementation, two outboxes.

Handlers write what must leave the process to an outbox table in the same
transaction as their effects (``Effects.emit`` -> ``event_outbox``,
``Effects.notify`` -> ``notification_outbox``). After the commit the runtime
hands the committed rows to the relay of each table (``submit``), which
publishes them with confirms and ``mandatory``, then marks them in the table.
The relay also reads the table itself: at start, and every ``outbox_poll_s``,
it picks up rows committed by another process (an admin command, a sweep run
from cron, a worker on another machine) or left behind by a crash.

* events go to ``ns.outbound`` with routing key = type, for downstream systems;
* notices go to ``ns.internal`` as ``notice.send`` (routing key = type), for
  the worker that sends them; a row no notice can be built from is marked
  ``failed`` with ``reason = 'invalid'`` and never published. ``notice.send``
  carries references only (notice_id, subject_ref, kind, channel): the sending
  worker renders from the outbox row itself, and the row's sealed secrets never
  leave the store in a message. It is internal, so it is not signed by a
  publisher key: only privacyops' broker users may publish on ``ns.internal``.

Crash windows: a commit then a crash before the publish leaves the row waiting,
and the next relay publishes it; a publish confirmed then a crash before the
mark publishes it again with the same message_id, which consumers dedupe (the
notifier's inbox and its ``sent`` ledger, downstream systems by message_id).
Two processes polling one store may both publish a row: the same.

Failures back off exponentially (tenacity, from 0.1 s to ``max_backoff_s``,
reset by the next success) and never drop a row. ``stop`` drains: what is in
memory is published within the drain deadline; whatever is left stays in the
table for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from config.settings import Settings
from infra.rabbit import ConfirmedPublisher, Publication
from infra.redaction import describe_error
from infra.runtime.tables import EVENT_PUBLISHED, EVENTS_WAITING, NOTICE_RELAYED, NOTICES_WAITING
from infra.runtime.worker import Effects, OutboundEvent, QueuedNotice
from infra.store import Row, Store, Transaction
from messages.errors import PrivacyOpsError
from messages.names import Names
from messages.notices import NoticeSend
from messages.registry import encode

log = structlog.get_logger("privacyops.outbox")


@dataclass(frozen=True)
class Outgoing:
    """One row ready to publish: where to, what, and how to find it again."""

    key: str
    tenant_id: str
    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str | None = None
    headers: dict[str, Any] | None = None


class Invalid(Exception):
    """A row no message can be built from; it is marked and never published."""


class Outbox(Protocol):
    """One outbox table: how its rows are read, turned into messages and marked."""

    name: str
    exchange: str

    async def waiting(self, tx: Transaction, limit: int) -> list[Row]: ...

    def outgoing(self, row: Any) -> Outgoing:
        """The message for a row (a table row or the item a handler committed)."""

    def mark_sent(self, tx: Transaction, sent: Sequence[Outgoing], now: datetime) -> None: ...

    def mark_invalid(self, tx: Transaction, rows: Sequence[Any], now: datetime) -> None: ...


class EventOutbox:
    """``event_outbox``: downstream events for ``ns.outbound``."""

    name = "events"

    def __init__(self, names: Names) -> None:
        self.exchange = names.outbound

    async def waiting(self, tx: Transaction, limit: int) -> list[Row]:
        return await tx.fetchall(EVENTS_WAITING, (limit,))

    def outgoing(self, row: Any) -> Outgoing:
        event = row if isinstance(row, OutboundEvent) else _event(row)
        return Outgoing(
            event.message_id, event.tenant_id, event.routing_key, event.body, event.message_id
        )

    def mark_sent(self, tx: Transaction, sent: Sequence[Outgoing], now: datetime) -> None:
        stamp = now.isoformat()
        tx.stage_all((EVENT_PUBLISHED, (stamp, o.tenant_id, o.key)) for o in sent)

    def mark_invalid(self, tx: Transaction, rows: Sequence[Any], now: datetime) -> None:
        """Every event row was encoded from a validated model: none is invalid."""


def _event(row: Row) -> OutboundEvent:
    message_id, tenant_id, routing_key, body = row
    return OutboundEvent(message_id, tenant_id, routing_key, bytes(body))


class NoticeOutbox:
    """``notification_outbox``: notices, as ``notice.send`` for the worker that sends them."""

    name = "notices"

    def __init__(self, names: Names) -> None:
        self.exchange = names.internal

    async def waiting(self, tx: Transaction, limit: int) -> list[Row]:
        return await tx.fetchall(NOTICES_WAITING, (limit,))

    def outgoing(self, row: Any) -> Outgoing:
        notice = row if isinstance(row, QueuedNotice) else QueuedNotice(*row)
        message = _notice_send(notice)
        return Outgoing(
            notice.notice_id,
            notice.tenant_id,
            message.type,
            encode(message),
            notice.notice_id,
            notice.cause_message_id,
        )

    def mark_sent(self, tx: Transaction, sent: Sequence[Outgoing], now: datetime) -> None:
        tx.stage_all((NOTICE_RELAYED, ("relayed", None, o.tenant_id, o.key)) for o in sent)

    def mark_invalid(self, tx: Transaction, rows: Sequence[Any], now: datetime) -> None:
        for row in rows:
            notice = row if isinstance(row, QueuedNotice) else QueuedNotice(*row)
            tx.stage(NOTICE_RELAYED, ("failed", "invalid", notice.tenant_id, notice.notice_id))


def _notice_send(notice: QueuedNotice) -> NoticeSend:
    try:
        return NoticeSend.model_validate(
            {
                "message_id": notice.notice_id,
                "tenant_id": notice.tenant_id,
                "occurred_at": datetime.fromisoformat(notice.created_at).astimezone(UTC),
                "correlation_id": notice.cause_message_id,
                "payload": {
                    "notice_id": notice.notice_id,
                    "subject_ref": notice.subject_ref,
                    "kind": notice.kind,
                    "channel": notice.channel,
                },
            }
        )
    except (ValidationError, ValueError) as exc:
        fields = sorted(
            {".".join(map(str, e["loc"])) for e in exc.errors()}
            if isinstance(exc, ValidationError)
            else {"context"}
        )
        log.error("notice_invalid", notice_id=notice.notice_id, kind=notice.kind, fields=fields)
        raise Invalid(notice.notice_id) from None


class OutboxRelay:
    """Publishes one outbox's committed rows, many confirms in flight at once."""

    def __init__(
        self,
        store: Store,
        publisher: ConfirmedPublisher,
        outbox: Outbox,
        *,
        poll_s: float = 1.0,
        batch: int = 256,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._outbox = outbox
        self._poll_s = poll_s
        self._batch = batch
        self._backoff = wait_exponential(multiplier=0.1, min=0.1, max=max_backoff_s)
        #: Rows in hand, by key, in arrival order; a row leaves only after it is marked.
        self._pending: dict[str, Any] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    def submit(self, rows: Sequence[Any]) -> None:
        """Rows committed by this process; published without waiting for the next poll."""
        for row in rows:
            self._pending.setdefault(self._key(row), row)
        if rows:
            self._wake.set()

    def poke(self) -> None:
        """Read the table now instead of at the next poll (tests, admin commands)."""
        self._wake.set()

    async def start(self) -> None:
        """Take what the table holds now, then relay in the background until stopped."""
        await self._read_table()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self._outbox.name}")

    async def stop(self, drain_s: float) -> None:
        """Publish what is in hand within ``drain_s``; the rest stays in the table."""
        if self._task is None:
            return
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), timeout=drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def idle(self) -> None:
        """Wait until nothing is in hand (shutdown and tests)."""
        while self._pending:  # noqa: ASYNC110 - polled by shutdown and tests only
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while True:
            poll = loop.time() >= next_poll
            await self._cycle(poll)
            if poll:
                next_poll = loop.time() + self._poll_s
            self._wake.clear()
            if self._pending:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_poll - loop.time()))
            if not self._pending:
                next_poll = 0.0  # woken with nothing in hand: a poke, read the table

    async def _cycle(self, poll: bool) -> None:
        """Read the table if due, then publish what is in hand; back off while it fails.

        Retried on every project error, permanent ones included: rows are durable in the
        table, and an unroutable notice (no sender's queue declared yet) may route later.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(PrivacyOpsError),
            wait=self._backoff,
            before_sleep=self._failed,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if poll:
                    await self._read_table()
                while self._pending:
                    await self._publish(list(self._pending.values())[: self._batch])

    def _failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "outbox_publish_failed",
            outbox=self._outbox.name,
            error_type=getattr(exc, "code", type(exc).__name__),
            error=describe_error(exc) if exc else None,
            retry_in_s=round(state.next_action.sleep, 2) if state.next_action else None,
        )

    async def _read_table(self) -> None:
        async with self._store.transaction() as tx:
            rows = await self._outbox.waiting(tx, self._batch * 4)
        fresh = [row for row in rows if self._key(row) not in self._pending]
        if fresh:
            log.info("outbox_rows_found", outbox=self._outbox.name, rows=len(fresh))
            self.submit(fresh)

    async def _publish(self, rows: list[Any]) -> None:
        ready: list[Outgoing] = []
        invalid: list[Any] = []
        for row in rows:
            try:
                ready.append(self._outbox.outgoing(row))
            except Invalid:
                invalid.append(row)
        results = await self._publisher.publish_many(
            self._outbox.exchange,
            [
                Publication(o.routing_key, o.body, o.message_id, o.correlation_id, o.headers)
                for o in ready
            ],
        )
        sent = [o for o, r in zip(ready, results, strict=True) if r is None]
        if sent or invalid:
            now = datetime.now(UTC)
            async with self._store.transaction() as tx:
                self._outbox.mark_sent(tx, sent, now)
                self._outbox.mark_invalid(tx, invalid, now)
            for key in [o.key for o in sent] + [self._key(row) for row in invalid]:
                self._pending.pop(key, None)
            self.published += len(sent)
        for result in results:
            if result is not None:
                raise result

    @staticmethod
    def _key(row: Any) -> str:
        if isinstance(row, OutboundEvent):
            return row.message_id
        if isinstance(row, QueuedNotice):
            return row.notice_id
        return str(row[0])


class Outboxes:
    """The relays of one process; takes committed effects and hands each row to its relay."""

    def __init__(self, events: OutboxRelay, notices: OutboxRelay | None = None) -> None:
        self.events = events
        self.notices = notices

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store,
        publisher: ConfirmedPublisher,
        names: Names,
        *,
        notices: bool,
    ) -> Outboxes:
        """The event relay, and the notice relay where a worker here sends notices."""

        def relay(outbox: Outbox) -> OutboxRelay:
            return OutboxRelay(
                store, publisher, outbox, poll_s=settings.outbox_poll_s, batch=settings.outbox_batch
            )

        return cls(relay(EventOutbox(names)), relay(NoticeOutbox(names)) if notices else None)

    @property
    def relays(self) -> list[OutboxRelay]:
        return [r for r in (self.events, self.notices) if r is not None]

    def submit(self, batch: Sequence[Effects]) -> None:
        events = [e for effects in batch for e in effects.events]
        if events:
            self.events.submit(events)
        if self.notices is not None:
            notices = [n for effects in batch for n in effects.notices]
            if notices:
                self.notices.submit(notices)

    async def start(self) -> None:
        for relay in self.relays:
            await relay.start()

    async def stop(self, drain_s: float) -> None:
        for relay in self.relays:
            await relay.stop(drain_s)

    async def idle(self) -> None:
        for relay in self.relays:
            await relay.idle()
