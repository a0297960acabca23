"""Assembles a running privacyops process: a session, topology, consumers, sweeps, ops.

``Service`` runs the workers it is given; which workers exist is decided by the
composition root (``workers/registry.py``), never here. Resources are acquired
in one place (``infra/runtime/session.py``) and closed in reverse order: sweeps,
consumers (draining the batch in flight), workers' own resources, the outbox
relays (draining what was committed), the broker, the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import structlog
from aio_pika.abc import AbstractChannel, AbstractQueue

from config.settings import Settings
from infra import rabbit, topology
from infra.health import DepthRefresher, HealthCache, OpsServer, broker_ok, store_ok
from infra.keys import signing_keyring
from infra.metrics import Metrics
from infra.redaction import describe_error
from infra.runtime.audit import AUDIT, AuditWorker
from infra.runtime.auth import Authenticator
from infra.runtime.consumer import Consumer, Observer
from infra.runtime.outbox import Outboxes
from infra.runtime.session import Session, closing, session
from infra.runtime.tables import prune
from infra.runtime.worker import Resources, Worker
from infra.store import Store
from infra.store.migrations import Schema
from messages.errors import PrivacyOpsError
from messages.names import Names
from messages.notices import NoticeSend

log = structlog.get_logger("privacyops.service")


class Service:
    """One process running one or more workers against one broker and one store."""

    def __init__(
        self,
        settings: Settings,
        workers: Sequence[Worker],
        *,
        schemas: Sequence[Schema] = (),
        serve_ops: bool = False,
        migrate: bool = True,
        observer: Observer | None = None,
    ) -> None:
        if not workers:
            raise ValueError("a service needs at least one worker")
        self.settings = settings
        # The runtime's own consumer of admin actions runs in every service (audit.py).
        extra = [] if any(w.name == AUDIT for w in workers) else [AuditWorker()]
        self.workers = [*workers, *extra]
        #: Every component's schema: those given (all registered) and the workers' own.
        self.schemas = [*schemas, *(w.schema for w in self.workers if w.schema)]
        self.names = Names(settings.namespace)
        self.consumers: list[Consumer] = []
        self.queues: dict[str, AbstractQueue] = {}
        #: Counted always; served on settings.metrics_port only with ``serve_ops`` (``run``).
        self.metrics = Metrics()
        self.ops: OpsServer | None = None
        self._serve_ops = serve_ops
        self._migrate = migrate
        self._observer = observer
        self._session: Session | None = None
        self._stack = AsyncExitStack()
        self._channels: list[AbstractChannel] = []
        self._tickers: list[asyncio.Task[None]] = []
        self._stopped = False

    @property
    def store(self) -> Store:
        return self._opened().store

    @property
    def outboxes(self) -> Outboxes:
        outboxes = self._opened().outboxes
        assert outboxes is not None
        return outboxes

    def _opened(self) -> Session:
        if self._session is None:
            raise RuntimeError("the service is not started")
        return self._session

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        s = self.settings
        sends_notices = any(NoticeSend in w.handlers for w in self.workers)
        self._session = await self._stack.enter_async_context(
            session(
                s,
                self.schemas,
                broker=True,
                notices=sends_notices,
                migrate=self._migrate,
                start_relays=False,
            )
        )
        connection, publisher = self._session.require_broker()
        keys = self._session.keys
        resources = Resources(s, self.store, publisher, self.names, keys, sink=self.outboxes)
        auth = Authenticator(s, signing_keyring(s), self.names)
        for worker in self.workers:
            channel = await rabbit.open_channel(connection, prefetch=s.prefetch)
            self._channels.append(channel)
            queues = await topology.declare(
                channel,
                self.names,
                {worker.name: worker.message_types()},
                s.retry_delays_ms,
                s.delivery_limit,
            )
            self.queues.update(queues)
            await worker.open(resources)
            self._stack.push_async_callback(
                closing(f"worker:{worker.name}", worker.close, s.shutdown_drain_s)
            )
            self.consumers.append(
                Consumer(
                    worker,
                    s,
                    self.store,
                    publisher,
                    self.outboxes,
                    self.names,
                    metrics=self.metrics.for_worker(worker.name),
                    observer=self._observer,
                    auth=auth,
                    sealer=keys.notice,
                )
            )
        await self.outboxes.start()
        for consumer in self.consumers:
            await consumer.start(self.queues[consumer.worker.name])
        if self._serve_ops and s.metrics_port:
            await self._start_ops()
        for worker in self.workers:
            if worker.periodic:
                self._tickers.append(
                    asyncio.create_task(self._tick(worker), name=f"tick:{worker.name}")
                )
        self._tickers.append(asyncio.create_task(self._prune(), name="prune"))
        log.info(
            "service_started",
            workers=[w.name for w in self.workers],
            namespace=s.namespace,
            store=self.store.describe(),
        )

    async def _tick(self, worker: Worker) -> None:
        """Run a worker's periodic work until stopped; a failed sweep is logged and retried."""
        while True:
            try:
                await worker.tick(self.store, self.outboxes, datetime.now(UTC))
            except PrivacyOpsError as exc:
                log.warning(
                    "sweep_failed",
                    worker=worker.name,
                    error_type=exc.code,
                    error=describe_error(exc),
                )
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def _prune(self) -> None:
        """Delete inbox rows and published events older than the retention, every
        ``prune_interval_s`` (README "Delivery guarantees"); a failure is logged and retried."""
        s = self.settings
        while True:
            before = (datetime.now(UTC) - timedelta(days=s.inbox_retention_days)).isoformat()
            try:
                async with self.store.transaction() as tx:
                    inbox, events = await prune(tx, before)
                if inbox or events:
                    log.info("store_pruned", inbox=inbox, events=events, before=before)
            except PrivacyOpsError as exc:
                log.warning("prune_failed", error_type=exc.code, error=describe_error(exc))
            await asyncio.sleep(s.prune_interval_s)

    async def stop(self) -> None:
        """Stop sweeps and consumers (draining), then close everything in reverse order.

        Stopping a stopped service does nothing."""
        if self._stopped:
            return
        self._stopped = True
        drain = self.settings.shutdown_drain_s
        for ticker in self._tickers:
            ticker.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        await asyncio.gather(*(c.stop(drain) for c in self.consumers))
        await self._stack.aclose()
        log.info("service_stopped")

    async def _start_ops(self) -> None:
        """/metrics, /healthz, /readyz and the dead-letter depth gauge (infra/health.py)."""
        s = self.settings
        connection, _ = self._opened().require_broker()
        depths = DepthRefresher(
            connection,
            self.names,
            [w.name for w in self.workers],
            self.metrics,
            s.dlq_depth_interval_s,
            self._refresh_figures,
        )
        depths.start()
        self._stack.push_async_callback(closing("dlq_depths", depths.stop, s.shutdown_drain_s))
        cache = HealthCache(self.health, s.health_timeout_s)
        await cache.start()
        self._stack.push_async_callback(closing("health_cache", cache.stop, s.shutdown_drain_s))
        self.ops = OpsServer(self.metrics, cache, lambda: self.ready, s.health_timeout_s)
        await self.ops.start(s.metrics_host, s.metrics_port)
        self._stack.push_async_callback(closing("ops_server", self.ops.stop, s.shutdown_drain_s))

    async def _refresh_figures(self) -> None:
        """Each worker's own figures into ``privacyops_worker_state{worker, name}``."""
        now = datetime.now(UTC)
        for worker in self.workers:
            try:
                figures = await worker.gauges(self.store, now)
            except PrivacyOpsError as exc:
                log.warning("gauges_failed", worker=worker.name, error_type=exc.code)
                continue
            for name, value in figures.items():
                self.metrics.worker_state.labels(worker.name, name).set(value)

    async def health(self) -> dict[str, bool]:
        """Broker connection open and store answering, each within health_timeout_s."""
        within = self.settings.health_timeout_s
        connection = self._session.connection if self._session else None
        return {
            "broker": broker_ok(connection),
            "store": await store_ok(self.store, within),
        }

    @property
    def ready(self) -> bool:
        return bool(self.consumers) and all(c.consuming for c in self.consumers)

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("shutdown_requested")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()
