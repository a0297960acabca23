"""The ops endpoint of ``privacyops run``: ``/metrics``, ``/healthz``, ``/readyz``.

A tiny asyncio HTTP/1.1 server on the service's own loop, so the probes read the
same objects the workers use (no thread, no lock). It is bounded like every
other wait (STYLE 6): a request must arrive within ``health_timeout_s`` and fit
in 8 KiB, a probe answers within ``health_timeout_s``, and at most
``MAX_CLIENTS`` connections are served at once (the rest are closed at once).

* ``/healthz``: 200 when the broker connection is open (a channel opens and
  closes) and the store answers ``SELECT 1``; else 503. Body: which check failed.
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
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from infra.metrics import Metrics
from infra.rabbit import BROKER_ERRORS
from infra.redaction import describe_error
from infra.store import Store
from messages.errors import PrivacyOpsError
from messages.names import Names

log = structlog.get_logger("privacyops.health")

MAX_CLIENTS = 16
MAX_REQUEST_BYTES = 8192
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def broker_ok(connection: AbstractRobustConnection | None, within_s: float) -> bool:
    """The connection is open and a channel opens on it within ``within_s``."""
    if connection is None or connection.is_closed:
        return False
    try:
        async with asyncio.timeout(within_s):
            channel = await connection.channel()
            await channel.close()
    except BROKER_ERRORS:
        return False
    return True


async def store_ok(store: Store, within_s: float) -> bool:
    try:
        async with asyncio.timeout(within_s):
            return await store.ping()
    except (TimeoutError, PrivacyOpsError):
        return False


class OpsServer:
    """Serves the three endpoints; ``checks`` and ``ready`` come from the Service."""

    def __init__(
        self,
        metrics: Metrics,
        checks: Callable[[], Awaitable[dict[str, bool]]],
        ready: Callable[[], bool],
        timeout: float,
    ) -> None:
        self._metrics = metrics
        self._checks = checks
        self._ready = ready
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._clients = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            raise PrivacyOpsError(
                f"cannot serve metrics on {host}:{port}: {type(exc).__name__}"
            ) from exc
        log.info("ops_server_started", host=host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            async with asyncio.timeout(self._timeout * 2):
                method, path = await self._request(reader)
                status, ctype, body = await self._route(method, path)
                writer.write(_response(status, ctype, body))
                await writer.drain()
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a slow, malformed or vanished client: just hang up
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self._timeout)

    @staticmethod
    async def _request(reader: asyncio.StreamReader) -> tuple[str, str]:
        head = await reader.readuntil(b"\r\n\r\n")  # LimitOverrunError is a ValueError
        method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        return method, path.split("?", 1)[0]

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)
        if path == "/healthz":
            checks = await self._checks()
            return (200 if all(checks.values()) else 503), "application/json", _json(checks)
        if path == "/readyz":
            ready = self._ready()
            return (200 if ready else 503), "application/json", _json({"consuming": ready})
        return 404, "text/plain", b"not found\n"


def _json(data: dict[str, bool]) -> bytes:
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def _response(status: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


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
