"""Faults against the real broker and a real SQLite file: SIGTERM mid-burst, broker restart.

Both tests push thousands of messages and count rows afterwards: every message
applied exactly once, nothing left in the queues. The broker-restart test stops
the RabbitMQ application of the suite's own node (tests/support/rabbit_node.py, the
``rabbit_node`` fixture), never the machine's broker; it always brings it back
(``finally`` and a fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import aio_pika
import pytest

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.consent import ConsentChanged
from messages.names import Names
from tests.support.db import connect
from tests.support.helpers import (
    consent_changed,
    delete_namespace,
    log_lines,
    security_env,
    store_env,
    wait_until,
)
from tests.support.rabbit_node import RabbitNode
from workers import registry
from workers.consent import ConsentWorker

BURST = 5_000
IN_FLIGHT = 300
#: Slack on top of the drain deadline for interpreter start-up and closing the rest.
EXIT_SLACK_S = 5.0


# -- helpers: store, logs, broker ---------------------------------------------------------


def count(db: Path, sql: str) -> int:
    """One scalar from the worker's database, through a connection of our own."""
    with connect(db, timeout=10) as conn:
        return int(conn.execute(sql).fetchone()[0])


def column(db: Path, sql: str) -> list[Any]:
    with connect(db, timeout=10) as conn:
        return [row[0] for row in conn.execute(sql)]


async def rows_reach(db: Path, table: str, expected: int, within: float) -> None:
    async def reached() -> bool:
        return count(db, f"SELECT COUNT(*) FROM {table}") >= expected

    await wait_until(reached, within=within, interval=0.02)


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines a worker process wrote (stderr lines that are not JSON skipped)."""
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def named(path: Path, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(path) if e.get("event") == event]


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return result.stdout


def queue_counts(name: str, node: RabbitNode | None = None) -> tuple[int, int]:
    """(messages_ready, messages_unacknowledged) of one queue, as the broker (the machine's,
    or a node of the test's own) reports them."""
    fields = ("name", "messages_ready", "messages_unacknowledged")
    if node is None:
        listed = rabbitmqctl("-q", "list_queues", *fields)
    else:
        listed = node.ctl("list_queues", *fields, timeout=60).stdout
    for line in listed.splitlines():
        fields = line.split("\t")
        if fields[0] == name:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"queue {name} is not on the broker")


async def queue_reaches(
    name: str, expected: tuple[int, int], node: RabbitNode | None = None, within: float = 30.0
) -> None:
    """Wait until (ready, unacked) is ``expected``; the broker refreshes quorum-queue
    figures on a timer (about every 5 s), so a first reading may be stale."""
    seen: list[tuple[int, int]] = []

    async def reached() -> bool:
        seen.append(await asyncio.to_thread(queue_counts, name, node))
        return seen[-1] == expected

    try:
        await wait_until(reached, within=within, interval=0.5)
    except TimeoutError:
        raise AssertionError(f"{name}: (ready, unacked) {seen[-1]} != {expected}") from None


async def broker_answers(url: str, within: float = 60.0) -> None:
    async def connects() -> bool:
        try:
            connection = await aio_pika.connect(url, timeout=2)
        except Exception:  # noqa: BLE001 - not up yet, poll again
            return False
        await connection.close()
        return True

    await wait_until(connects, within=within, interval=0.5)


async def publish_all(settings: Settings, messages: Sequence[ConsentChanged]) -> None:
    """Publish with confirms, ``IN_FLIGHT`` at a time, on a connection of its own."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with Publisher.from_settings(settings) as publisher:

        async def one(message: ConsentChanged) -> None:
            async with gate:
                await publisher.publish(message)

        await asyncio.gather(*(one(m) for m in messages))


# -- helpers: the worker as a subprocess --------------------------------------------------


def privacyops_bin() -> str:
    found = shutil.which("privacyops", path=str(Path(sys.executable).parent))
    assert found, f"no privacyops script next to {sys.executable}"
    return found


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        **store_env(settings),
        "PRIVACYOPS_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms),
        "PRIVACYOPS_BATCH_WINDOW_MS": str(settings.batch_window_ms),
        "PRIVACYOPS_SHUTDOWN_DRAIN_S": str(settings.shutdown_drain_s),
        "PRIVACYOPS_HANDLER_TIMEOUT_S": str(settings.handler_timeout_s),
        "PRIVACYOPS_CONNECT_TIMEOUT_S": str(settings.connect_timeout_s),
        "PRIVACYOPS_PUBLISH_TIMEOUT_S": str(settings.publish_timeout_s),
        "PRIVACYOPS_WORKERS": json.dumps(["consent"]),
        "PRIVACYOPS_METRICS_PORT": "0",
        **security_env(settings),
        "PRIVACYOPS_LOG_FORMAT": "json",
        "PRIVACYOPS_LOG_LEVEL": "info",
    }


def open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


class WorkerProcess:
    """``privacyops run`` in a subprocess, logging JSON lines to a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, within: float = 30.0) -> None:
        with open_log(self.log_path) as log:
            self.proc = await asyncio.create_subprocess_exec(
                privacyops_bin(),
                "run",
                "--migrate",
                env=worker_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        async def started() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode} before starting:\n"
                    + self.log_path.read_text()[-3000:]
                )
            return bool(named(self.log_path, "service_started"))

        await wait_until(started, within=within, interval=0.05)

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; return the exit code and the seconds it took to exit."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.proc.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_drain_s + EXIT_SLACK_S
        try:
            async with asyncio.timeout(limit):
                code = await self.proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"worker still running {limit}s after SIGTERM:\n"
                + self.log_path.read_text()[-3000:]
            ) from None
        return code, loop.time() - sent

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in log_events(self.log_path) if e.get("level") in ("error", "critical")]


# -- 1. SIGTERM during a burst, then a restart --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigterm_during_burst_then_restart(settings: Settings, tmp_path: Path) -> None:
    db = settings.db_path
    names = Names(settings.namespace)
    queue = names.queue("consent")
    messages = [consent_changed(f"subject-{i:05d}") for i in range(BURST)]
    sent_ids = {str(m.message_id) for m in messages}
    first = WorkerProcess(settings, tmp_path / "first.log")
    second = WorkerProcess(settings, tmp_path / "second.log")
    publishing: asyncio.Task[None] | None = None
    try:
        await first.start()
        publishing = asyncio.create_task(publish_all(settings, messages))
        await rows_reach(db, "inbox", 300, within=60)

        code, took = await first.terminate()
        assert code == 0, first.log_path.read_text()[-3000:]
        assert took <= settings.shutdown_drain_s + EXIT_SLACK_S
        stopped = named(first.log_path, "consumer_stopped")
        assert sorted(e["worker"] for e in stopped) == ["audit", "consent"]
        assert not named(first.log_path, "drain_deadline_passed")
        assert not first.errors()
        applied_first = count(db, "SELECT COUNT(*) FROM inbox")
        assert 0 < applied_first < BURST, "SIGTERM should land while messages are still coming"

        await publishing  # every message confirmed by the broker
        # What the first process committed it also acknowledged; the rest waits in the queue.
        await queue_reaches(queue, (BURST - applied_first, 0))

        await second.start()
        await rows_reach(db, "inbox", BURST, within=120)

        async def outbox_published() -> bool:
            return count(db, "SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL") == 0

        await wait_until(outbox_published, within=30)
        code, _ = await second.terminate()
        assert code == 0, second.log_path.read_text()[-3000:]
        assert named(second.log_path, "consumer_stopped")
        assert not second.errors()

        assert set(column(db, "SELECT message_id FROM inbox")) == sent_ids
        assert count(db, "SELECT COUNT(*) FROM inbox") == BURST
        assert count(db, "SELECT COUNT(*) FROM consent_state") == BURST
        assert count(db, "SELECT COUNT(DISTINCT message_id) FROM consent_history") == BURST
        assert count(db, "SELECT COUNT(*) FROM consent_history") == BURST
        assert count(db, "SELECT COUNT(*) FROM notification_outbox") == BURST
        causes = [
            json.loads(body)["payload"]["cause_message_id"]
            for body in column(db, "SELECT body FROM event_outbox")
        ]
        assert len(causes) == BURST
        assert set(causes) == sent_ids
        await queue_reaches(queue, (0, 0))
        await queue_reaches(names.dlq("consent"), (0, 0))
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await publishing
        await first.kill()
        await second.kill()
        await delete_namespace(
            settings.amqp_url.get_secret_value(), names, ["consent"], settings.retry_delays_ms
        )


# -- 2. Broker restart during consumption -------------------------------------------------


class Broker:
    """Stops and starts the RabbitMQ application of the suite's own node (never the
    machine's broker); never leaves it stopped."""

    def __init__(self, node: RabbitNode) -> None:
        self.node = node
        self.stopped = False

    async def stop_app(self) -> None:
        self.stopped = True
        await asyncio.to_thread(self.node.stop_app)

    async def start_app(self) -> None:
        await asyncio.to_thread(self.node.start_app)
        self.stopped = False

    def ensure_started(self) -> None:
        if self.stopped:
            self.node.start_app()
            self.stopped = False


@pytest.fixture
def broker(rabbit_node: RabbitNode) -> Iterator[Broker]:
    """Backs up the test's ``finally``: brings the node back even after a timeout."""
    control = Broker(rabbit_node)
    yield control
    control.ensure_started()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_broker_restart_during_consumption(
    settings: Settings, broker: Broker, log_output: io.StringIO
) -> None:
    # Slow enough (about 20 messages per 50 ms batch) that the restart lands mid-stream.
    settings = settings.with_changes(
        amqp_url=broker.node.url, prefetch=20, batch_max=50, batch_window_ms=50
    )
    names = Names(settings.namespace)
    service = Service(settings, [ConsentWorker()], schemas=registry.schemas())
    try:
        await service.start()
        await restart_during_consumption(settings, service, broker, log_output)
    finally:
        await service.stop()
        await delete_namespace(broker.node.url, names, ["consent"], settings.retry_delays_ms)


async def restart_during_consumption(
    settings: Settings, service: Service, broker: Broker, log_output: io.StringIO
) -> None:
    db = settings.db_path
    names = Names(settings.namespace)
    before = [consent_changed(f"before-{i:04d}") for i in range(2_000)]
    after = [consent_changed(f"after-{i:04d}") for i in range(500)]

    await publish_all(settings, before)  # all confirmed before the broker goes away
    await rows_reach(db, "inbox", 100, within=60)
    try:
        await broker.stop_app()
        applied_at_stop = count(db, "SELECT COUNT(*) FROM inbox")
        await asyncio.sleep(2)
    finally:
        await broker.start_app()
    await broker_answers(settings.amqp_url.get_secret_value())
    assert applied_at_stop < len(before), "the restart should land while messages are consumed"

    await publish_all(settings, after)  # a new connection, after the restart
    await rows_reach(db, "inbox", len(before) + len(after), within=120)

    async def outbox_published() -> bool:
        return count(db, "SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL") == 0

    await wait_until(outbox_published, within=90)
    assert service.ready
    sent_ids = {str(m.message_id) for m in (*before, *after)}
    assert set(column(db, "SELECT message_id FROM inbox")) == sent_ids
    assert count(db, "SELECT COUNT(*) FROM inbox") == len(sent_ids)
    assert count(db, "SELECT COUNT(*) FROM consent_state") == len(sent_ids)
    assert count(db, "SELECT COUNT(*) FROM consent_history") == len(sent_ids)
    assert count(db, "SELECT COUNT(*) FROM event_outbox") == len(sent_ids)
    await queue_reaches(names.queue("consent"), (0, 0), broker.node)
    await queue_reaches(names.dlq("consent"), (0, 0), broker.node)
    events = Counter(line["event"] for line in log_lines(log_output))
    assert not events["batch_crashed"], events  # deliveries of the lost channel are dropped
