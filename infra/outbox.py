"""Transactional outbox relay for downstream events.

Handlers write events to ``event_outbox`` in the same transaction as their
effects; after the commit the runtime hands them to this relay, which publishes
them to the outbound exchange with confirms and then marks them published. At
start the relay publishes whatever an earlier process committed but did not
get to publish. A crash between publish and mark republishes on restart:
downstream consumers see each event at least once and dedupe on message_id.

The start-up sweep reads across tenants: it is the system's own bookkeeping,
it hands rows to the broker unchanged and shows them to no tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from infra.errors import PrivacyOpsError
from infra.rabbit import ConfirmedPublisher
from infra.redaction import describe_error
from infra.store import SqliteStore
from infra.worker import OutboundEvent

log = structlog.get_logger("privacyops.outbox")

MARK_PUBLISHED = "UPDATE event_outbox SET published_at = ? WHERE tenant_id = ? AND message_id = ?"
PENDING = (
    "SELECT message_id, tenant_id, routing_key, body FROM event_outbox"
    " WHERE published_at IS NULL ORDER BY created_at LIMIT ?"
)


class OutboxRelay:
    """Publishes committed outbox events, many confirms in flight at once."""

    def __init__(
        self,
        store: SqliteStore,
        publisher: ConfirmedPublisher,
        exchange: str,
        max_in_flight: int = 256,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._exchange = exchange
        self._max_in_flight = max_in_flight
        self._max_backoff_s = max_backoff_s
        self._pending: list[OutboundEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def submit(self, events: Sequence[OutboundEvent]) -> None:
        self._pending.extend(events)
        self._wake.set()

    async def start(self) -> None:
        await self._load_unpublished()
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, drain_s: float) -> None:
        """Publish what is pending within ``drain_s``; the rest stays in the table."""
        if self._task is None:
            return
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), timeout=drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def idle(self) -> None:
        while self._pending:  # noqa: ASYNC110 - polled by shutdown and tests only
            await asyncio.sleep(0.01)

    async def _load_unpublished(self, limit: int = 10_000) -> None:
        async with self._store.transaction() as tx:
            rows = await tx.fetchall(PENDING, (limit,))
        self.submit([OutboundEvent(r[0], r[1], r[2], bytes(r[3])) for r in rows])
        if rows:
            log.info("outbox_resumed", events=len(rows))

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch = self._pending[: self._max_in_flight]
            try:
                await self._publish(batch)
            except PrivacyOpsError as exc:
                log.warning(
                    "outbox_publish_failed",
                    error_type=exc.code,
                    error=describe_error(exc),
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = 0.1

    async def _publish(self, batch: list[OutboundEvent]) -> None:
        results = await asyncio.gather(
            *(
                self._publisher.publish(
                    self._exchange, e.routing_key, e.body, message_id=e.message_id
                )
                for e in batch
            ),
            return_exceptions=True,
        )
        sent = [e for e, r in zip(batch, results, strict=True) if r is None]
        if sent:
            now = datetime.now(UTC).isoformat()
            async with self._store.transaction() as tx:
                tx.stage_all((MARK_PUBLISHED, (now, e.tenant_id, e.message_id)) for e in sent)
            self.published += len(sent)
            done = {id(e) for e in sent}
            self._pending = [e for e in self._pending if id(e) not in done]
        for result in results:
            if isinstance(result, BaseException):
                raise result
