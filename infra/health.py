"""The ops endpoint of ``privacyops run``: ``/metrics``, ``/healthz``, ``/readyz``.

Served by aiohttp (``web.AppRunner`` on the service's own loop) with
prometheus_client's aiohttp handler for ``/metrics``. It binds 127.0.0.1 by
default (``metrics_host``): the endpoint has no authentication. Every response
closes its connection, and aiohttp serves each client in its own task, so idle or
slow clients cannot starve the probes (the hand-written server it replaces was
starved by 16 idle sockets).

* ``/healthz``: answered from cached state, never by touching the broker or the
  store in the request: ``HealthCache`` refreshes it every ``health_timeout_s``
  (broker connection open; store answers ``SELECT 1`` without taking its write
  lock). 200 when both were fine at the last refresh and that refresh is recent
  (three intervals); else 503. Body: which check failed.
* ``/readyz``: 200 when every consumer is consuming; else 503.
* ``/metrics``: Prometheus text format of the service's registry.

``DepthRefresher`` sets ``privacyops_dead_letter_depth`` every
``dlq_depth_interval_s`` from a passive queue declare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence

import aiormq
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from infra.metrics import Metrics
from infra.rabbit import BROKER_ERRORS
from infra.redaction import describe_error
from infra.store import Store
from messages.errors import PrivacyOpsError
from messages.names import Names

log = structlog.get_logger("privacyops.health")


def broker_ok(connection: AbstractRobustConnection | None) -> bool:
    """The robust connection is connected now: not closed, and not between a lost link
    and the reconnection it makes by itself when the broker returns."""
    return connection is not None and not connection.is_closed and connection.connected.is_set()


async def store_ok(store: Store, within_s: float) -> bool:
    try:
        async with asyncio.timeout(within_s):
            return await store.ping()
    except (TimeoutError, PrivacyOpsError):
        return False


class HealthCache:
    """The last health checks, refreshed in the background; probes only read it."""

    def __init__(self, checks: Callable[[], Awaitable[dict[str, bool]]], interval_s: float) -> None:
        self._checks = checks
        self._interval = interval_s
        self.state: dict[str, bool] = {"broker": False, "store": False}
        self._at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="health-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        self.state = await self._checks()
        self._at = asyncio.get_running_loop().time()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except PrivacyOpsError as exc:
                log.warning("health_check_failed", error=describe_error(exc))
                self.state = {k: False for k in self.state}

    def current(self) -> dict[str, bool]:
        """The cached state; every check counts as failed when the cache went stale."""
        stale = asyncio.get_running_loop().time() - self._at > 3 * self._interval
        return {k: False for k in self.state} if stale else dict(self.state)


class OpsServer:
    """Serves the three endpoints; ``health`` and ``ready`` come from the Service."""

    def __init__(
        self, metrics: Metrics, health: HealthCache, ready: Callable[[], bool], timeout: float
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._ready = ready
        self._timeout = timeout
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_close_connection])
        app.router.add_get("/metrics", make_aiohttp_handler(self._metrics.registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=self._timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise PrivacyOpsError(
                f"cannot serve metrics on {host}:{port}: {type(exc).__name__}"
            ) from exc
        addresses = self._runner.addresses  # the bound sockets (an ephemeral port)
        self._port = int(addresses[0][1]) if addresses else port
        log.info("ops_server_started", host=host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        checks = self._health.current()
        return _json(200 if all(checks.values()) else 503, checks)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = self._ready()
        return _json(200 if ready else 503, {"consuming": ready})


@web.middleware
async def _close_connection(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One request per connection: probes need no keep-alive, and none is left idle."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # 404, 405: answered, and closed like the rest
        exc.force_close()
        raise
    response.force_close()
    return response


def _json(status: int, data: dict[str, bool]) -> web.Response:
    body = json.dumps(data, sort_keys=True) + "\n"
    return web.Response(status=status, text=body, content_type="application/json")


class DepthRefresher:
    """Keeps the dead-letter depth gauge current while the service runs."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        names: Names,
        workers: Sequence[str],
        metrics: Metrics,
        interval_s: float,
        figures: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._figures = figures
        self._connection = connection
        self._names = names
        self._gauges = {w: metrics.dlq_depth.labels(w) for w in workers}
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dlq-depths")

    async def stop(self) -> None:
        # The flag ends the loop even when the cancel lands as its refresh times out
        # (asyncio.timeout then turns the cancellation into a TimeoutError, which the
        # loop survives by design).
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.refresh()
            except BROKER_ERRORS as exc:
                log.warning("dlq_depth_unavailable", error=describe_error(exc))
            await asyncio.sleep(self._interval)

    async def refresh(self) -> None:
        async with asyncio.timeout(self._interval):
            for worker, gauge in self._gauges.items():
                depth = await self._depth(worker)
                if depth is not None:
                    gauge.set(depth)
            if self._figures is not None:
                await self._figures()

    async def _depth(self, worker: str) -> int | None:
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self._names.dlq(worker), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None  # not declared yet
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()
        return int(queue.declaration_result.message_count or 0)
