"""Several worker processes on one machine: ``privacyops run --processes N``.

The supervisor runs no worker itself. It starts N copies of the same ``run``
command; they compete on the same queues (the broker hands each delivery to one
of them) and share the store (PostgreSQL, or one SQLite file whose writers take
turns). It forwards SIGTERM and SIGINT to every child and waits for them to drain
(each within its own ``shutdown_drain_s``), killing one that outlives the grace
period. A child that dies on its own is started again after a back-off (1 s,
doubling to 30 s; a child that ran a minute resets it): its unacknowledged
deliveries went back to the queue when its connection closed, so nothing is lost.

Each child serves its ops endpoint on ``metrics_port + index`` (index 0..N-1),
so Prometheus scrapes every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("privacyops.supervisor")

#: A child that ran this long before dying starts again without waiting.
STABLE_S = 60.0
MAX_BACKOFF_S = 30.0


@dataclass
class Child:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff_s: float = 1.0
    restarts: int = 0
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)


class Supervisor:
    """Starts, restarts and stops N copies of one command."""

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        metrics_port: int,
        grace_s: float,
    ) -> None:
        self._command = list(command)
        self._children = [Child(i) for i in range(processes)]
        self._metrics_port = metrics_port
        self._grace_s = grace_s
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Until SIGTERM or SIGINT; then stop every child. 0 once all have exited."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            for child in self._children:
                await self._start(child)
            await self._watch()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self._stop_all()
        return 0

    async def _start(self, child: Child) -> None:
        env = dict(os.environ)
        if self._metrics_port:
            env["PRIVACYOPS_METRICS_PORT"] = str(self._metrics_port + child.index)
        child.process = await asyncio.create_subprocess_exec(*self._command, env=env)
        child.started_at = asyncio.get_running_loop().time()
        child.waiter = asyncio.create_task(child.process.wait())
        log.info("process_started", index=child.index, pid=child.process.pid)

    async def _watch(self) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                waiters = [c.waiter for c in self._children if c.waiter is not None]
                done, _ = await asyncio.wait([stop, *waiters], return_when=asyncio.FIRST_COMPLETED)
                for child in self._children:
                    if child.waiter in done and not self._stopping.is_set():
                        await self._restart(child)
        finally:
            stop.cancel()

    async def _restart(self, child: Child) -> None:
        assert child.waiter is not None
        code = child.waiter.result()
        loop = asyncio.get_running_loop()
        ran_s = loop.time() - child.started_at
        child.backoff_s = 1.0 if ran_s >= STABLE_S else child.backoff_s
        log.warning(
            "process_exited", index=child.index, exit_code=code, restart_in_s=child.backoff_s
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), child.backoff_s)
        if self._stopping.is_set():
            return
        child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
        child.restarts += 1
        await self._start(child)

    async def _stop_all(self) -> None:
        running = [
            c for c in self._children if c.process is not None and c.process.returncode is None
        ]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), self._grace_s)
            except TimeoutError:
                log.error("process_killed", index=child.index, after_s=self._grace_s)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
        log.info("supervisor_stopped", processes=len(self._children))
