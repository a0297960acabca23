"""The fault scenarios of issue 14, shared by the ``faults`` tests and ``bench/faults.py``.

Each scenario pushes consent messages through the real consent worker while a fault is
injected, waits until every message is settled, and returns one ``Row``: messages sent,
lost (sent but never applied), applied twice (more than one consent_history row for a
message), downstream duplicates (``consent.updated`` events delivered more than once to a
downstream queue: at-least-once, which downstream dedupes by message_id) and the recovery
time the scenario defines. The tests run small counts and assert; the bench runs the
issue's counts and prints the table.

Nothing here touches the machine's broker or PostgreSQL beyond the queues a scenario
declares under its own namespace: nodes, clusters and PostgreSQL instances that are
stopped or killed are the scenario's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from bench.faultkit.common import (
    WorkerProcess,
    connect,
    consent_changed,
    register_store,
    wait_until,
)
from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.consent import ConsentChanged
from messages.names import Names
from workers import registry
from workers.consent import ConsentWorker

IN_FLIGHT = 200


@dataclass
class Row:
    scenario: str
    messages: int
    lost: int
    applied_twice: int
    downstream_duplicates: int
    recovery_s: float
    dead_lettered: int = 0
    note: str = ""

    def line(self) -> str:
        return (
            f"| {self.scenario:<34} | {self.messages:>8} | {self.lost:>4} "
            f"| {self.applied_twice:>7} | {self.downstream_duplicates:>10} "
            f"| {self.recovery_s:>8.1f} | {self.note}"
        )


HEADER = (
    f"| {'scenario':<34} | {'messages':>8} | {'lost':>4} | {'applied twice':>7} "
    f"| {'downstream duplicates':>10} | {'recovery time (s)':>8} | note"
)


def messages(prefix: str, n: int) -> list[ConsentChanged]:
    return [consent_changed(f"{prefix}-{i:07d}") for i in range(n)]


async def publish_all(
    urls: str | Sequence[str], namespace: str, sent: Sequence[ConsentChanged]
) -> None:
    """Publish with confirms, ``IN_FLIGHT`` at a time."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with Publisher(urls, namespace=namespace) as publisher:

        async def one(message: ConsentChanged) -> None:
            async with gate:
                await publisher.publish(message)

        await asyncio.gather(*(one(m) for m in sent))


def scalar(db: Path, sql: str) -> int:
    with connect(db, timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


def inbox_count(db: Path) -> int:
    return scalar(db, "SELECT COUNT(*) FROM inbox WHERE worker = 'consent'")


async def applied_reach(db: Path, n: int, within: float) -> None:
    async def reached() -> bool:
        return await asyncio.to_thread(inbox_count, db) >= n

    await wait_until(reached, within=within, interval=0.1)


async def recovery_since(db: Path, n: int, mark: float, within: float) -> float:
    """Seconds from ``mark`` (the fault's end) until the worker applies again: the inbox grows
    past what it holds now; 0 when all ``n`` messages were already applied."""
    base = await asyncio.to_thread(inbox_count, db)
    if base >= n:
        return 0.0
    await applied_reach(db, base + 1, within)
    return time.monotonic() - mark


class Downstream:
    """A downstream system's queue on the outbound exchange (``consent.updated``)."""

    def __init__(self, urls: Sequence[str], names: Names) -> None:
        self.urls = list(urls)
        self.names = names
        self.queue = f"{names.namespace}.test-downstream"

    async def declare(self) -> None:
        connection = await _connect_any(self.urls)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                self.names.outbound, aio_pika.ExchangeType.TOPIC, durable=True, passive=True
            )
            queue = await channel.declare_queue(
                self.queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(exchange, "consent.updated")

    async def drain(self) -> Counter[str]:
        """Every event delivered so far, by message_id (removed from the queue)."""
        seen: Counter[str] = Counter()
        connection = await _connect_any(self.urls)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(self.queue, ensure=False)
            while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
                seen[json.loads(message.body)["message_id"]] += 1
        return seen

    async def delete(self) -> None:
        connection = await _connect_any(self.urls)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(self.queue)


async def _connect_any(urls: Sequence[str]) -> aio_pika.abc.AbstractConnection:
    last: Exception | None = None
    for url in urls:
        try:
            return await aio_pika.connect(url, timeout=5)
        except Exception as exc:  # noqa: BLE001 - try the next node
            last = exc
    raise AssertionError(f"no broker answered: {last!r}")


async def outcome(
    scenario: str,
    settings: Settings,
    sent: Sequence[ConsentChanged],
    downstream: Downstream | None,
    recovery_s: float,
    within: float = 300,
    note: str = "",
) -> Row:
    """Wait until every message is accounted for, applied or dead-lettered (or the wait
    runs out), then count. A dead-lettered message ends the wait at once: it is never
    applied, and waiting for it would only hide the scenario's reason behind a timeout."""
    db = settings.db_path

    async def accounted_for() -> bool:
        applied = await asyncio.to_thread(inbox_count, db)
        return applied >= len(sent) or applied + await dlq_depth(settings) >= len(sent)

    with contextlib.suppress(TimeoutError):
        await wait_until(accounted_for, within=within, interval=0.5)
    ids = {str(m.message_id) for m in sent}
    with connect(db, timeout=30) as conn:
        inbox = {r[0] for r in conn.execute("SELECT message_id FROM inbox")}
        history = Counter(r[0] for r in conn.execute("SELECT message_id FROM consent_history"))
    twice = sum(1 for i in ids if history[i] > 1)
    duplicates = 0
    if downstream is not None:
        await _outbox_published(db)
        events = await downstream.drain()
        duplicates = sum(count - 1 for count in events.values())
    dead = await dlq_depth(settings)
    return Row(scenario, len(sent), len(ids - inbox), twice, duplicates, recovery_s, dead, note)


async def _outbox_published(db: Path, within: float = 60) -> None:
    async def published() -> bool:
        return scalar(db, "SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL") == 0

    with contextlib.suppress(TimeoutError):
        await wait_until(published, within=within, interval=0.2)


async def dlq_depth(settings: Settings) -> int:
    connection = await _connect_any(settings.broker_urls)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(settings.namespace).dlq("consent"), passive=True)
        return int(queue.declaration_result.message_count or 0)


async def start_service(settings: Settings) -> Service:
    register_store(settings)
    service = Service(settings, [ConsentWorker()], schemas=registry.schemas())
    await service.start()
    return service


# -- 1. kill -9 the worker at random points ------------------------------------------------


async def kill_worker(
    settings: Settings, log_dir: Path, n: int, kills: int, seed: int, *, note: str = ""
) -> Row:
    """``privacyops run`` as a subprocess, SIGKILLed ``kills`` times at seeded random points
    of an ``n``-message stream, restarted each time; recovery: the longest time from a
    restart until the worker applied again."""
    register_store(settings)
    rng = random.Random(seed)
    db = settings.db_path
    sent = messages("kill", n)
    worker = WorkerProcess(settings, log_dir / "worker-0.log")
    await worker.start(within=60)
    downstream = Downstream(settings.broker_urls, Names(settings.namespace))
    await downstream.declare()
    publishing = asyncio.create_task(publish_all(settings.broker_urls, settings.namespace, sent))
    recovery = 0.0
    done = 0
    try:
        for k in range(kills):
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            await worker.kill()
            done += 1
            base = await asyncio.to_thread(inbox_count, db)
            if base >= n:
                break
            worker = WorkerProcess(settings, log_dir / f"worker-{k + 1}.log")
            restarted = time.monotonic()
            await worker.start(within=60)
            await applied_reach(db, base + 1, within=60)
            recovery = max(recovery, time.monotonic() - restarted)
        await publishing
        row = await outcome("kill -9 worker", settings, sent, downstream, recovery, note=note)
    finally:
        if not publishing.done():
            publishing.cancel()
        await worker.kill()
        await downstream.delete()
    row.note = row.note or f"seed {seed}, {done} kills"
    return row


# -- 2. store outage: SQLite locked by another process -----------------------------------

_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def sqlite_locked(settings: Settings, n: int, lock_s: float) -> Row:
    """Another process holds an exclusive lock on the SQLite file for ``lock_s`` seconds
    mid-stream; recovery: from the lock's release until the worker applied again."""
    db = settings.db_path
    sent = messages("lock", n)
    service = await start_service(settings)
    downstream = Downstream(settings.broker_urls, Names(settings.namespace))
    try:
        await downstream.declare()
        await publish_all(settings.broker_urls, settings.namespace, sent[: n // 2])
        await applied_reach(db, n // 10, within=60)
        locker = subprocess.Popen(  # noqa: ASYNC220 - a lock holder, waited for below
            [sys.executable, "-c", _LOCKER, str(db), str(lock_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(locker.stdout.readline), 30)
            assert line.strip() == "locked"
            await publish_all(settings.broker_urls, settings.namespace, sent[n // 2 :])
            await asyncio.to_thread(locker.wait, lock_s + 30)
        finally:
            if locker.poll() is None:
                locker.kill()
                locker.wait(10)
            if locker.stdout is not None:
                locker.stdout.close()
        recovery = await recovery_since(db, n, time.monotonic(), within=lock_s + 120)
        return await outcome(f"SQLite locked {lock_s:g} s", settings, sent, downstream, recovery)
    finally:
        await service.stop()
        await downstream.delete()


# -- 3. store outage: PostgreSQL stopped and started -------------------------------------


async def postgres_down(settings: Settings, pg: object, n: int, down_s: float) -> Row:
    """The scenario's own PostgreSQL instance stopped mid-stream for ``down_s`` seconds,
    then started; recovery: from the start until the worker applied again."""
    from bench.faultkit.pg_instance import PgInstance

    assert isinstance(pg, PgInstance)
    db = settings.db_path
    sent = messages("pg", n)
    service = await start_service(settings)
    downstream = Downstream(settings.broker_urls, Names(settings.namespace))
    try:
        await downstream.declare()
        await publish_all(settings.broker_urls, settings.namespace, sent[: n // 2])
        await applied_reach(db, n // 10, within=60)
        await asyncio.to_thread(pg.stop)
        await publish_all(settings.broker_urls, settings.namespace, sent[n // 2 :])
        await asyncio.sleep(down_s)
        await asyncio.to_thread(pg.start)
        recovery = await recovery_since(db, n, time.monotonic(), within=120)
        return await outcome(f"PostgreSQL down {down_s:g} s", settings, sent, downstream, recovery)
    finally:
        await service.stop()
        await downstream.delete()


# -- 4. network cut between worker and broker --------------------------------------------


async def network_cut(settings: Settings, proxy: object, n: int, cut_s: float) -> Row:
    """The worker's only address goes through ``proxy`` (tests/support/tcp_proxy.py); the
    link is cut mid-stream for ``cut_s`` seconds; recovery: from the link's return until
    the worker applied again."""
    from bench.faultkit.tcp_proxy import TcpProxy

    assert isinstance(proxy, TcpProxy)
    direct = settings.amqp_url.get_secret_value()
    through = settings.with_changes(amqp_url=proxy.url_for(direct), amqp_urls=[])
    db = settings.db_path
    sent = messages("cut", n)
    service = await start_service(through)
    downstream = Downstream([direct], Names(settings.namespace))
    try:
        await downstream.declare()
        await publish_all(direct, settings.namespace, sent[: n // 2])
        await applied_reach(db, n // 10, within=60)
        await proxy.cut()
        await publish_all(direct, settings.namespace, sent[n // 2 :])
        await asyncio.sleep(cut_s)
        await proxy.restore()
        recovery = await recovery_since(db, n, time.monotonic(), within=60)
        return await outcome(f"network cut {cut_s:g} s", settings, sent, downstream, recovery)
    finally:
        await service.stop()
        await downstream.delete()


# -- 5. cluster: kill -9 the node leading the worker queue -------------------------------


async def cluster_leader_killed(settings: Settings, cluster: object, n: int) -> Row:
    """The worker connects with every node's address, the queue leader's first; its queue
    is a quorum queue on 3 nodes. The leader node is SIGKILLed mid-stream (taking the
    worker's connection with it); recovery: from the kill until the worker applied again
    (past what a batch in flight at the kill could still commit)."""
    from bench.faultkit.rabbit_cluster import RabbitCluster

    assert isinstance(cluster, RabbitCluster)
    names = Names(settings.namespace)
    queue = names.queue("consent")
    urls = cluster.urls
    on_cluster = settings.with_changes(amqp_url=urls[0], amqp_urls=urls)
    service = await start_service(on_cluster)
    leader = await asyncio.to_thread(cluster.leader, queue)
    if leader.url != urls[0]:
        # The leader is placed by the broker: restart the worker with the leader's address
        # first, so that killing the leader also takes the worker's connection.
        await service.stop()
        urls = [leader.url, *(u for u in urls if u != leader.url)]
        on_cluster = settings.with_changes(amqp_url=urls[0], amqp_urls=urls)
        service = await start_service(on_cluster)
    db = settings.db_path
    sent = messages("cluster", n)
    # The test's publisher and downstream reader use the other nodes first.
    others = [*urls[1:], urls[0]]
    downstream = Downstream(others, names)
    try:
        await downstream.declare()
        members = await asyncio.to_thread(cluster.members, queue)
        await publish_all(others, settings.namespace, sent[: n // 2])
        await applied_reach(db, n // 10, within=60)
        assert service._session is not None
        assert service._session.connection is not None
        worker_port = service._session.connection.url.port  # type: ignore[attr-defined]
        await asyncio.to_thread(leader.kill)
        killed = time.monotonic()
        publishing = asyncio.create_task(publish_all(others, settings.namespace, sent[n // 2 :]))
        # Past what a batch in flight at the kill could still commit: consuming again.
        base = await asyncio.to_thread(inbox_count, db)
        recovery = 0.0
        if base < n:
            await applied_reach(db, min(n, base + 2 * on_cluster.prefetch), within=60)
            recovery = time.monotonic() - killed
        await publishing
        note = f"{len(members)} members; the leader was the worker's node"
        if worker_port != leader.port:
            note = f"{len(members)} members; the worker was on another node"
        return await outcome(
            "cluster: queue leader kill -9", on_cluster, sent, downstream, recovery, note=note
        )
    finally:
        await service.stop()
        await downstream.delete()
