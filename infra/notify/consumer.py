"""A consumer for workers whose handler acts on the outside world.

The runtime's ``Consumer`` runs a batch's handlers inside one store
transaction and commits after the last of them. That is right for effects in
the store, wrong for sending mail: the SQLite write lock would be held for the
length of an SMTP session, stalling every other worker, and a handler could not
record "sending" or "sent" durably on its own (the store's lock is not
re-entrant, so a nested transaction would wait for ever).

``SendingConsumer`` keeps the runtime's contract (decode, inbox dedupe,
retry tiers, dead letters, ack after commit) but runs handlers *between* two
short transactions:

1. transaction: drop deliveries whose message_id is in the inbox;
2. no transaction: each handler runs and may commit its own state (the
   notifier records ``sending``, sends, records ``sent``/``failed``);
3. transaction: the handlers' effects (audit rows) and the inbox rows;
4. route failures, then ack (``Consumer._settle``).

A crash after 2 and before 3 redelivers the message; the worker's own state
(``sent``) absorbs it. It relies on ``Consumer``'s internal steps
(``_drop_duplicates``, ``_handle``, ``_after_commit``); see the proposed
public hook in the notifier's hand-over notes.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from time import perf_counter

import structlog
from aio_pika.abc import AbstractQueue

from infra.errors import PrivacyOpsError
from infra.rabbit import ConfirmedPublisher
from infra.redaction import describe_error
from infra.runtime import INBOX_INSERT, Consumer, Delivery
from infra.store import SqliteStore
from infra.topology import Names
from infra.worker import Effects, Worker

log = structlog.get_logger("privacyops.runtime")


class SideEffectWorker(Worker):
    """A worker whose handler acts outside the store; run by ``SendingConsumer``.

    Its handler runs with no store transaction open and may open its own.
    """

    @abstractmethod
    async def open(self, store: SqliteStore, publisher: ConfirmedPublisher, names: Names) -> None:
        """Acquire clients (and companions such as a relay) before consuming."""

    @abstractmethod
    async def close(self, drain_s: float) -> None:
        """Release them, in reverse order, after consuming stopped."""


@dataclass
class SendingConsumer(Consumer):
    """Runs a ``SideEffectWorker``: handlers outside the batch transaction."""

    async def start(self, queue: AbstractQueue) -> None:
        worker = self._side_effect_worker()
        await worker.open(self.store, self.publisher, self.names)
        await super().start(queue)

    async def stop(self, drain_s: float) -> None:
        await super().stop(drain_s)
        await self._side_effect_worker().close(drain_s)

    def _side_effect_worker(self) -> SideEffectWorker:
        if not isinstance(self.worker, SideEffectWorker):
            raise TypeError("SendingConsumer runs SideEffectWorker instances only")
        return self.worker

    async def _apply(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        try:
            async with self.store.transaction() as tx:
                fresh = await self._drop_duplicates(tx, deliveries)
        except PrivacyOpsError as exc:
            self._fail(deliveries, exc)
            return
        for d in fresh:
            assert d.message is not None
            effects = Effects(worker=self.worker.name, message=d.message, attempt=d.attempt)
            with structlog.contextvars.bound_contextvars(**d.context(self.worker.name)):
                started = perf_counter()
                d.error = await self._handle(d.message, effects)
                self.metrics.handled(d.message.type, perf_counter() - started)
            d.effects = effects if d.error is None else None
        done = [d for d in fresh if d.error is None]
        try:
            async with self.store.transaction() as tx:
                for d in done:
                    assert d.message is not None
                    assert d.effects is not None
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
        except PrivacyOpsError as exc:
            self._fail(done, exc)
            return
        self._after_commit(deliveries)

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
