"""The worker runtime: consume, decode, dedupe, handle, commit, ack.

One ``Consumer`` per worker. Deliveries are gathered into micro-batches (up to
``batch_max`` messages or ``batch_window_ms``) and applied in one transaction:

1. decode each body (size, signature, contract, tenant); a failure is permanent;
2. in one transaction: skip message_ids already in the inbox, let the worker
   load what it needs, run each handler, stage its effects and its inbox row;
3. commit; then settle every delivery: a failed one is republished with
   confirms to a retry tier or the dead-letter queue, and only then is
   anything acknowledged. A crash before the ack means redelivery, which the
   inbox absorbs: effects happen once, nothing is lost.

If the batch's transaction fails, its messages are applied one at a time so a
single bad message cannot hold the others back. A crash outside the handlers
(decoding, settling) does the same: the batch is applied again one delivery at a
time and only the delivery that crashes alone is requeued, so the queue's delivery
limit dead-letters the poison message and never a good one beside it.

A worker with ``transactional = False`` (one that acts on the outside world,
such as sending mail) has its handlers run *between* two short transactions
instead of inside one: holding the store's write lock for an SMTP session would
stall every other worker, and such a handler must commit its own progress
("sending", "sent") as it goes. The steps become:

1. transaction: drop deliveries whose message_id is in the inbox;
2. no transaction: each handler runs and may commit its own state;
3. transaction: the handlers' effects (audit rows) and the inbox rows;
4. route failures, then ack, as above.

A crash after 2 and before 3 redelivers the message; the worker's own state
absorbs the copy (the notifier's ``sent`` ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from config.settings import Settings
from infra.headers import (
    BROKER_HEADERS,
    H_ATTEMPTS,
    H_ERROR,
    H_ERROR_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ROUTING_KEY,
    H_WORKER,
)
from infra.keys import Sealer
from infra.metrics import NullMetrics, WorkerMetrics
from infra.rabbit import BROKER_ERRORS, ConfirmedPublisher
from infra.redaction import describe_error
from infra.runtime.auth import Authenticated, Authenticator
from infra.runtime.tables import INBOX_INSERT, INBOX_SEEN
from infra.runtime.worker import BoundHandler, Effects, Sink, Worker
from infra.store import Store, Transaction
from messages.envelope import Envelope
from messages.errors import (
    HandlerCrashed,
    HandlerTimeout,
    InvalidMessage,
    OversizedMessage,
    PermanentError,
    PrivacyOpsError,
    RetryableError,
    UnknownMessageType,
)
from messages.names import Names
from messages.registry import decode

log = structlog.get_logger("privacyops.runtime")


@dataclass
class Delivery:
    """One delivery from the broker and what became of it."""

    raw: AbstractIncomingMessage
    attempt: int
    message: Envelope | None = None
    error: PrivacyOpsError | None = None
    effects: Effects | None = None
    duplicate: bool = False
    found: Authenticated = field(default_factory=lambda: Authenticated(None, None))

    def context(self, worker: str) -> dict[str, Any]:
        m = self.message
        return {
            "worker": worker,
            "message_id": str(m.message_id) if m else self.raw.message_id,
            "type": m.type if m else None,
            "tenant": m.tenant_id if m else None,
            "attempt": self.attempt,
        }


class Observer(Protocol):
    """Watches a consumer from outside (benchmarks): when it starts, each settled batch."""

    def consuming(self, worker: str) -> None: ...

    def settled(self, worker: str, raws: Sequence[AbstractIncomingMessage]) -> None:
        """The batch's transaction committed and every delivery in it was settled."""


def attempt_of(raw: AbstractIncomingMessage) -> int:
    """1 for a first try; failures recorded in our own header (x-death is not ours)."""
    value = (raw.headers or {}).get(H_ATTEMPTS, 0)
    return value + 1 if isinstance(value, int) and value >= 0 else 1


@dataclass
class Consumer:
    """Runs one worker on its queue until stopped."""

    worker: Worker
    settings: Settings
    store: Store
    publisher: ConfirmedPublisher
    sink: Sink
    names: Names
    metrics: WorkerMetrics | NullMetrics = field(default_factory=NullMetrics)
    observer: Observer | None = None
    #: Signatures, broker users and key scopes (None: nothing checked, as in unit tests).
    auth: Authenticator | None = None
    #: Seals ``Effects.notify(sealed=...)``: the notice key.
    sealer: Sealer | None = None
    _dispatch: dict[type[Envelope], BoundHandler] = field(default_factory=dict)
    _buffer: deque[AbstractIncomingMessage] = field(default_factory=deque)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: AbstractQueue | None = None
    _tag: str | None = None
    _task: asyncio.Task[None] | None = None
    _busy: bool = False
    _stopping: bool = False

    async def start(self, queue: AbstractQueue) -> None:
        self._dispatch = self.worker.bound_handlers()
        self._queue = queue
        self._tag = await queue.consume(self._on_message, no_ack=False)
        self._task = asyncio.create_task(self._loop(), name=f"consumer:{self.worker.name}")
        if self.observer is not None:
            self.observer.consuming(self.worker.name)
        log.info("consumer_started", worker=self.worker.name, queue=queue.name)

    @property
    def consuming(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    async def stop(self, drain_s: float) -> None:
        """Stop consuming, finish the batch in flight within ``drain_s``, leave the rest."""
        self._stopping = True
        self._arrived.set()
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=drain_s)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=drain_s)
            except TimeoutError:
                log.warning("drain_deadline_passed", worker=self.worker.name)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        log.info("consumer_stopped", worker=self.worker.name, left_unacked=len(self._buffer))

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        self._buffer.append(raw)
        self._arrived.set()

    async def _loop(self) -> None:
        while not self._stopping:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                await self.process(batch)
            except Exception as exc:  # noqa: BLE001 - keep consuming; see _isolate
                self._crashed(exc, len(batch))
                await self._isolate(batch)

    async def _isolate(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """After a crash outside the handlers, apply the batch again one delivery at a time:
        only a delivery that crashes on its own is requeued, so the broker's delivery limit
        (``x-delivery-limit``, counted per requeue) dead-letters the poison message and never
        a good one beside it. Acks are single here: a requeue that failed must not be
        acknowledged by a later ``multiple`` ack."""
        crashed = len(batch) == 1
        if crashed:
            await self._requeue(batch[0])
        else:
            for raw in batch:
                try:
                    await self.process([raw], multiple=False)
                except Exception as exc:  # noqa: BLE001 - the poison message: requeue it alone
                    self._crashed(exc, 1)
                    await self._requeue(raw)
                    crashed = True
        if crashed:
            # Do not spin on a message that keeps crashing the loop.
            await asyncio.sleep(1.0)

    def _crashed(self, exc: Exception, size: int) -> None:
        log.error(
            "batch_crashed",
            worker=self.worker.name,
            size=size,
            error_type=type(exc).__name__,
            error=describe_error(exc),
        )

    async def _next_batch(self) -> list[AbstractIncomingMessage]:
        while not self._buffer and not self._stopping:
            self._arrived.clear()
            await self._arrived.wait()
        window = self.settings.batch_window_ms / 1000
        deadline = asyncio.get_running_loop().time() + window
        while len(self._buffer) < self.settings.batch_max and not self._stopping:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
        if self._stopping:
            return []
        count = min(len(self._buffer), self.settings.batch_max)
        return [self._buffer.popleft() for _ in range(count)]

    async def process(
        self, raws: Sequence[AbstractIncomingMessage], *, multiple: bool = True
    ) -> None:
        """Apply one batch and settle every delivery in it (``multiple``: see ``_ack``)."""
        live = [raw for raw in raws if _channel_open(raw)]
        if len(live) < len(raws):
            # Delivered on a channel lost since (broker restart): the broker redelivers
            # them on the restored channel, so handling them now would only double the work.
            log.info(
                "stale_deliveries_dropped", worker=self.worker.name, count=len(raws) - len(live)
            )
        self.metrics.batch(len(live))
        deliveries = [self._decode(raw) for raw in live]
        await self._apply([d for d in deliveries if d.error is None])
        await self._settle(deliveries, multiple)
        if self.observer is not None:
            self.observer.settled(self.worker.name, live)

    # -- decode --------------------------------------------------------------------------

    def _decode(self, raw: AbstractIncomingMessage) -> Delivery:
        delivery = Delivery(raw=raw, attempt=attempt_of(raw))
        try:
            delivery.message = self._validate(delivery)
        except PermanentError as exc:
            delivery.error = exc
        return delivery

    def _validate(self, delivery: Delivery) -> Envelope:
        """Size, signature and sender (infra/runtime/auth.py), contract, tenant, scope."""
        raw = delivery.raw
        body = raw.body
        if len(body) > self.settings.max_body_bytes:
            raise OversizedMessage(
                f"body of {len(body)} bytes exceeds the limit of {self.settings.max_body_bytes}"
            )
        if self.auth is not None:
            delivery.found = self.auth.check(raw)
        message = decode(body)
        if self.settings.tenants and message.tenant_id not in self.settings.tenants:
            raise InvalidMessage("tenant_id: not a known tenant")
        if type(message) not in self._dispatch:
            raise UnknownMessageType(f"worker {self.worker.name} has no handler for this type")
        if self.auth is not None:
            self.auth.authorize(delivery.found, message)
        return message

    # -- apply ---------------------------------------------------------------------------

    async def _apply(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        if self.worker.transactional:
            await self._apply_in_batch(deliveries)
        else:
            await self._apply_outside(deliveries)

    async def _apply_in_batch(self, deliveries: list[Delivery]) -> None:
        """Handlers inside the batch's one transaction (see the module docstring)."""
        try:
            async with self.store.transaction() as tx:
                fresh = await self._drop_duplicates(tx, deliveries)
                await self.worker.prepare(tx, [d.message for d in fresh if d.message])
                for d in fresh:
                    # Handlers record log events on ``effects`` (logged after commit, with
                    # the message's context); the crash log names the message itself.
                    # Binding the context here too would cost ~15 us a message for nothing.
                    await self._run(d)
                    self._stage_applied(tx, d)
        except Exception as caught:  # noqa: BLE001 - last resort: route, never crash the loop
            exc = _as_privacyops_error(caught)
            if len(deliveries) == 1 or isinstance(exc, RetryableError):
                self._fail(deliveries, exc)
                return
            for d in deliveries:  # isolate the message that broke the batch
                d.effects, d.duplicate = None, False
                await self._apply_in_batch([d])
            return
        self._after_commit(deliveries)

    async def _apply_outside(self, deliveries: list[Delivery]) -> None:
        """Handlers between two transactions (see the module docstring)."""
        try:
            async with self.store.transaction() as tx:
                fresh = await self._drop_duplicates(tx, deliveries)
        except PrivacyOpsError as exc:
            self._fail(deliveries, exc)
            return
        for d in fresh:
            assert d.message is not None
            with structlog.contextvars.bound_contextvars(**d.context(self.worker.name)):
                await self._run(d)
        done = [d for d in fresh if d.error is None]
        try:
            async with self.store.transaction() as tx:
                for d in done:
                    self._stage_applied(tx, d)
        except PrivacyOpsError as exc:
            self._fail(done, exc)
            return
        self._after_commit(deliveries)

    async def _run(self, d: Delivery) -> None:
        """Run the delivery's handler; its effects, or its error, land on ``d``."""
        assert d.message is not None
        effects = Effects(
            worker=self.worker.name,
            message=d.message,
            attempt=d.attempt,
            sealer=self.sealer,
            sender=d.found.sender,
        )
        started = perf_counter()
        d.error = await self._handle(d.message, effects)
        self.metrics.handled(d.message.type, perf_counter() - started)
        d.effects = effects if d.error is None else None

    def _stage_applied(self, tx: Transaction, d: Delivery) -> None:
        """An applied message's effects and its inbox row, in the caller's transaction."""
        if d.effects is None or d.message is None:
            return
        tx.stage_all(d.effects.writes)
        tx.stage(
            INBOX_INSERT,
            (
                self.worker.name,
                d.message.tenant_id,
                str(d.message.message_id),
                d.message.type,
                d.effects.now.isoformat(),
            ),
        )

    def _fail(self, deliveries: list[Delivery], exc: PrivacyOpsError) -> None:
        for d in deliveries:
            d.error, d.effects, d.duplicate = exc, None, False
        log.warning(
            "batch_failed",
            worker=self.worker.name,
            size=len(deliveries),
            error_type=exc.code,
            error=describe_error(exc),
        )

    async def _handle(self, message: Envelope, effects: Effects) -> PrivacyOpsError | None:
        try:
            async with asyncio.timeout(self.settings.handler_timeout_s):
                await self._dispatch[type(message)](message, effects)
        except TimeoutError:
            return HandlerTimeout(f"handler ran past {self.settings.handler_timeout_s}s")
        except PrivacyOpsError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - the runtime's last-resort handler (STYLE)
            log.error(
                "handler_crashed",
                worker=self.worker.name,
                message_id=str(message.message_id),
                type=message.type,
                tenant=message.tenant_id,
                attempt=effects.attempt,
                error_type=type(exc).__name__,
                error=describe_error(exc),
            )
            return HandlerCrashed(f"{type(exc).__name__}: {describe_error(exc)}")
        return None

    async def _drop_duplicates(self, tx: Transaction, deliveries: list[Delivery]) -> list[Delivery]:
        """Mark deliveries whose message_id is in the inbox or earlier in this batch."""
        seen: set[tuple[str, str]] = set()
        by_tenant: dict[str, list[str]] = {}
        for d in deliveries:
            assert d.message is not None
            by_tenant.setdefault(d.message.tenant_id, []).append(str(d.message.message_id))
        # A message delivered again while another process still applies it waits here
        # for that commit, then finds its inbox row (several processes on one store).
        await tx.lock(
            *(f"inbox:{self.worker.name}:{t}:{i}" for t, ids in by_tenant.items() for i in ids)
        )
        for tenant, ids in by_tenant.items():
            marks = ", ".join("?" for _ in ids)
            rows = await tx.fetchall(f"{INBOX_SEEN}({marks})", (self.worker.name, tenant, *ids))
            seen.update((tenant, row[0]) for row in rows)
        fresh = []
        for d in deliveries:
            assert d.message is not None
            key = (d.message.tenant_id, str(d.message.message_id))
            d.duplicate = key in seen
            seen.add(key)
            if not d.duplicate:
                fresh.append(d)
        return fresh

    def _after_commit(self, deliveries: list[Delivery]) -> None:
        """Log the committed effects and hand their events and notices to the relays."""
        committed = []
        verbose = log.is_enabled_for(logging.INFO)
        for d in deliveries:
            if d.message is not None and (d.duplicate or d.effects is not None):
                self.metrics.applied(d.message.type, d.duplicate)
            if d.effects is not None:
                committed.append(d.effects)
            if verbose and (d.duplicate or (d.effects is not None and d.effects.log_events)):
                self._log_committed(d)
        if committed:
            self.sink.submit(committed)
            self.worker.committed(committed)

    def _log_committed(self, d: Delivery) -> None:
        with structlog.contextvars.bound_contextvars(**d.context(self.worker.name)):
            if d.duplicate:
                log.info("duplicate_skipped")
            for event, fields in d.effects.log_events if d.effects else ():
                log.info(event, **fields)

    # -- settle --------------------------------------------------------------------------

    async def _settle(self, deliveries: list[Delivery], multiple: bool = True) -> None:
        """Route failures with confirms, then acknowledge; a routing failure leaves it unacked."""
        done: list[AbstractIncomingMessage] = []
        requeued = False
        for d in deliveries:
            if d.error is None:
                done.append(d.raw)
                continue
            with structlog.contextvars.bound_contextvars(**d.context(self.worker.name)):
                try:
                    await self._route_failure(d, d.error)
                except PrivacyOpsError as exc:
                    log.error("failure_not_routed", error_type=exc.code, error=describe_error(exc))
                    await self._requeue(d.raw)
                    requeued = True
                    continue
            done.append(d.raw)
        await self._ack(done, multiple=multiple and not requeued)

    async def _route_failure(self, d: Delivery, error: PrivacyOpsError) -> None:
        failures = d.attempt
        delays = self.settings.retry_delays_ms
        retry = isinstance(error, RetryableError) and failures <= len(delays)
        key = (
            Names.retry_key(self.worker.name, delays[failures - 1])
            if retry
            else Names.dlq_key(self.worker.name)
        )
        headers = self._failure_headers(d, error)
        raw = d.raw
        await self.publisher.publish(
            self.names.internal,
            key,
            raw.body,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            headers=headers,
            timestamp=raw.timestamp,
            content_type=raw.content_type or "application/json",
        )
        self.metrics.failure(d.message.type if d.message else None, error.code, retry)
        event = "retry_scheduled" if retry else "dead_lettered"
        log.warning(
            event,
            error_type=error.code,
            error=describe_error(error),
            attempts=failures,
            next_delay_ms=delays[failures - 1] if retry else None,
        )

    def _failure_headers(self, d: Delivery, error: PrivacyOpsError) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        old = dict(d.raw.headers or {})
        headers = {k: v for k, v in old.items() if k not in BROKER_HEADERS}
        headers.update(
            {
                H_ATTEMPTS: d.attempt,
                H_ERROR_TYPE: error.code,
                H_ERROR: describe_error(error),
                H_FIRST_FAILURE: old.get(H_FIRST_FAILURE) or now,
                H_LAST_FAILURE: now,
                H_WORKER: self.worker.name,
                H_ROUTING_KEY: old.get(H_ROUTING_KEY) or d.raw.routing_key or "",
            }
        )
        return headers

    async def _requeue(self, raw: AbstractIncomingMessage) -> None:
        with contextlib.suppress(*BROKER_ERRORS):
            await raw.reject(requeue=True)

    @staticmethod
    async def _ack(done: list[AbstractIncomingMessage], multiple: bool) -> None:
        """Acknowledge the batch: with ``multiple``, one ack per channel for its last tag.

        That is safe only when every earlier delivery on the channel is settled: batches
        run one at a time in delivery order, and a requeue that may have failed turns
        ``multiple`` off.
        """
        live = [raw for raw in done if _channel_open(raw)]
        if len(live) < len(done):
            # The channel closed since delivery: the broker redelivers, the inbox dedupes.
            log.warning("ack_lost", count=len(done) - len(live), reason="channel_closed")
        last: dict[int, AbstractIncomingMessage] = {}
        for raw in live:
            last[id(raw.channel)] = raw
        for raw in last.values() if multiple else live:
            try:
                await raw.ack(multiple=multiple)
            except BROKER_ERRORS as exc:
                # The channel closed since delivery: the broker redelivers, the inbox dedupes.
                log.warning("ack_lost", error_type=type(exc).__name__)


def _channel_open(raw: AbstractIncomingMessage) -> bool:
    """Whether the delivery's channel is still open.

    aio-pika's ``IncomingMessage.channel`` raises ``ChannelInvalidStateError`` once the
    channel is closed (after a broker restart the robust channel has a new one).
    """
    try:
        return not raw.channel.is_closed
    except BROKER_ERRORS:
        return False


def _as_privacyops_error(exc: Exception) -> PrivacyOpsError:
    if isinstance(exc, PrivacyOpsError):
        return exc
    return HandlerCrashed(f"{type(exc).__name__}: {describe_error(exc)}")
