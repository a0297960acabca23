"""Assembles a running privacyops process: store, broker, topology, consumers, relay.

Resources are acquired in one place and closed in reverse order; a failure
while closing one is logged and the rest still close (STYLE 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from config.settings import Settings
from infra import rabbit, topology
from infra.errors import PrivacyOpsError
from infra.health import DepthRefresher, OpsServer, broker_ok, store_ok
from infra.metrics import Metrics
from infra.notify.consumer import SendingConsumer, SideEffectWorker
from infra.outbox import OutboxRelay
from infra.redaction import describe_error
from infra.runtime import Consumer
from infra.store import SqliteStore
from infra.topology import Names
from infra.worker import Worker
from workers.registry import build_workers

log = structlog.get_logger("privacyops.service")


class Service:
    """One process running one or more workers against one broker and one store."""

    def __init__(
        self,
        settings: Settings,
        workers: Sequence[Worker] | None = None,
        *,
        serve_ops: bool = False,
    ) -> None:
        self.settings = settings
        self.workers = (
            list(workers) if workers is not None else build_workers(settings.workers, settings)
        )
        self.names = Names(settings.namespace)
        self.store = SqliteStore(
            settings.db_path, settings.db_busy_timeout_ms, settings.db_synchronous
        )
        self.consumers: list[Consumer] = []
        self.relay: OutboxRelay | None = None
        self.queues: dict[str, AbstractQueue] = {}
        self._connection: AbstractRobustConnection | None = None
        self._channels: list[AbstractChannel] = []
        self._closers: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._tickers: list[asyncio.Task[None]] = []
        #: Counted always; served on settings.metrics_port only with ``serve_ops`` (``run``).
        self.metrics = Metrics()
        self.ops: OpsServer | None = None
        self._serve_ops = serve_ops

    async def _tick(self, worker: Worker) -> None:
        """Run a worker's periodic work until stopped; a failed sweep is logged and retried."""
        assert self.relay is not None
        while True:
            try:
                await worker.tick(self.store, self.relay, datetime.now(UTC))
            except PrivacyOpsError as exc:
                log.warning(
                    "sweep_failed",
                    worker=worker.name,
                    error_type=exc.code,
                    error=describe_error(exc),
                )
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def start(self) -> None:
        s = self.settings
        await self.store.open(w.schema for w in self.workers if w.schema)
        self._closers.append(("store", self.store.close))
        self._connection = await rabbit.connect(s.amqp_url.get_secret_value(), s.connect_timeout_s)
        self._closers.append(("broker", self._connection.close))
        publish_channel = await rabbit.open_channel(self._connection, confirms=True)
        publisher = rabbit.ConfirmedPublisher(publish_channel, s.publish_timeout_s)
        self.relay = OutboxRelay(self.store, publisher, self.names.outbound)
        for worker in self.workers:
            channel = await rabbit.open_channel(self._connection, prefetch=s.prefetch)
            self._channels.append(channel)
            queues = await topology.declare(
                channel,
                self.names,
                {worker.name: worker.handles},
                s.retry_delays_ms,
                s.delivery_limit,
            )
            self.queues.update(queues)
            # A worker acting outside the store (sending notices) runs its handlers
            # between transactions: infra/notify/consumer.py.
            consumer_class = SendingConsumer if isinstance(worker, SideEffectWorker) else Consumer
            consumer = consumer_class(
                worker,
                s,
                self.store,
                publisher,
                self.relay,
                self.names,
                metrics=self.metrics.for_worker(worker.name),
            )
            self.consumers.append(consumer)
        await self.relay.start()
        self._closers.append(("relay", lambda: self._stop_relay()))
        for consumer in self.consumers:
            await consumer.start(self.queues[consumer.worker.name])
        if self._serve_ops and s.metrics_port:
            await self._start_ops()
        for worker in self.workers:
            if worker.periodic:
                self._tickers.append(
                    asyncio.create_task(self._tick(worker), name=f"tick:{worker.name}")
                )
        log.info(
            "service_started",
            workers=[w.name for w in self.workers],
            namespace=s.namespace,
            store=str(s.db_path),
        )

    async def _stop_relay(self) -> None:
        if self.relay is not None:
            await self.relay.stop(self.settings.shutdown_drain_s)

    async def stop(self) -> None:
        """Stop consuming, drain, then close relay, broker and store in reverse order."""
        drain = self.settings.shutdown_drain_s
        for ticker in self._tickers:
            ticker.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        await asyncio.gather(*(c.stop(drain) for c in self.consumers))
        while self._closers:
            name, close = self._closers.pop()
            try:
                await asyncio.wait_for(close(), timeout=drain)
            except Exception as exc:  # noqa: BLE001 - keep closing the rest (STYLE 7)
                log.error(
                    "close_failed",
                    resource=name,
                    error_type=type(exc).__name__,
                    error=describe_error(exc),
                )
        log.info("service_stopped")

    async def _start_ops(self) -> None:
        """/metrics, /healthz, /readyz and the dead-letter depth gauge (infra/health.py)."""
        s = self.settings
        assert self._connection is not None
        depths = DepthRefresher(
            self._connection,
            self.names,
            [w.name for w in self.workers],
            self.metrics,
            s.dlq_depth_interval_s,
            self._refresh_figures,
        )
        depths.start()
        self._closers.append(("dlq_depths", depths.stop))
        self.ops = OpsServer(self.metrics, self.health, lambda: self.ready, s.health_timeout_s)
        await self.ops.start(s.metrics_host, s.metrics_port)
        self._closers.append(("ops_server", self.ops.stop))

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
        return {
            "broker": await broker_ok(self._connection, within),
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
