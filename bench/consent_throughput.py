"""Consent throughput benchmark: the consent worker against a raw ack-only consumer.

    .venv/bin/python bench/consent_throughput.py                 # ~1-2 minutes on 2 cores
    .venv/bin/python bench/consent_throughput.py --json --messages 20000 --seconds 10
    .venv/bin/python bench/consent_throughput.py --processes 2 --skip-info
    .venv/bin/python bench/consent_throughput.py --store postgresql://root@127.0.0.1/test

In one run, with its own namespace and a temporary SQLite file, deleting its queues and
exchanges at the end:

(a) pre-publishes N ``consent.changed`` bodies (~400 bytes, distinct subjects) into a plain
    quorum queue and times a raw aio-pika consumer that only acks (prefetch = the worker's);
(b) pre-publishes N into the consent worker's queue and times a ``Service`` running the
    consent worker with the default batch settings until every message is committed and
    acknowledged; the outbox relay's ``consent.updated`` publishing is timed separately.
    The service reports to a ``Probe`` (the runtime's ``Observer`` hook): when consuming
    started and when each batch was committed and acknowledged.
    (b) runs with worker logs at ``warning`` and, unless ``--skip-info``, again with ``info``
    logs rendered to ``--log-file`` (default /dev/null), which costs the per-message events;
(c) publishes at half the peak rate of (b) from a separate process for ``--seconds`` and
    reports publish-to-commit latency: send time (header) to the end of the batch's commit
    and ack, and, from the store, ``occurred_at`` (set at send) to ``consent_state.updated_at``
    (the handler's clock, just before the commit).

(b") with ``--processes N``: the same as (b) with N worker processes (spawned, each the
    service ``privacyops run`` starts) competing on the queue and sharing the store;
    timed from the first process consuming to the last batch settled.

``--store postgresql://...`` runs (b), (b'), (b") and (c) on PostgreSQL, a schema each.
Targets (issue 12): b/a >= 0.45 on SQLite; b"/a >= 0.65 with ``--processes 2``; on
PostgreSQL, b" with 2 processes >= 1.6 x b.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from pydantic import SecretStr

from config.settings import Settings
from infra import logging as plog
from infra import rabbit, topology
from infra.keys import store_key
from infra.runtime.service import Service
from infra.runtime.worker import Worker
from infra.store.sqlite import connect_file
from infra.topology import QUORUM
from messages.names import Names
from workers import registry
from workers.consent import ConsentWorker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
TENANTS = ("acme", "bravo-collect", "cape-recoveries")
CHANNELS = ("email", "sms", "phone", "whatsapp", "post")
SOURCES = ("web_form", "sms_stop_reply", "call_centre", "email_unsubscribe", "api")
WORDING = "Offers by this channel; STOP to opt out."
SENT_HEADER = "x-bench-sent"
CHUNK = 500


# -- messages ------------------------------------------------------------------------------


def consent_body(i: int, rng: random.Random, occurred_at: datetime) -> tuple[str, bytes]:
    """One consent.changed body (~400 bytes) for a subject no other message names."""
    message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    status = "withdrawn" if rng.random() < 0.3 else "granted"
    source = rng.choice(SOURCES)
    evidence: dict[str, str] = {
        "reference": f"form-{rng.getrandbits(40):010x}",
        "captured_by": f"crm-{rng.randrange(400):03d}",
    }
    if source in ("web_form", "call_centre"):  # what the subject saw or heard
        evidence["wording"] = WORDING
    if source == "web_form":
        evidence["ip_address"] = (
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        )
    body = {
        "message_id": message_id,
        "type": "consent.changed",
        "version": 1,
        "tenant_id": TENANTS[i % len(TENANTS)],
        "occurred_at": occurred_at.isoformat(),
        "payload": {
            "subject_ref": f"debtor-{i:06d}{rng.getrandbits(16):04x}",
            "channel": rng.choice(CHANNELS),
            "purpose": "direct_marketing",
            "status": status,
            "source": source,
            "evidence": evidence,
        },
    }
    return message_id, json.dumps(body, separators=(",", ":")).encode()


def consent_bodies(count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(hours=1)
    return [consent_body(i, rng, base + timedelta(microseconds=i)) for i in range(count)]


async def prepublish(
    url: str, exchange: str, routing_key: str, bodies: Sequence[tuple[str, bytes]]
) -> float:
    """Publish with confirms, CHUNK in flight at a time; return the rate (msg/s)."""
    connection = await rabbit.connect(url, 10)
    try:
        channel = await rabbit.open_channel(connection, confirms=True)
        publisher = rabbit.ConfirmedPublisher(channel, 30)
        started = time.perf_counter()
        for start in range(0, len(bodies), CHUNK):
            await asyncio.gather(
                *(
                    publisher.publish(exchange, routing_key, body, message_id=mid)
                    for mid, body in bodies[start : start + CHUNK]
                )
            )
        return len(bodies) / (time.perf_counter() - started)
    finally:
        await connection.close()


# -- (a) raw consumer ----------------------------------------------------------------------


async def raw_consumer_rate(url: str, queue_name: str, count: int, prefetch: int) -> float:
    """Consume ``count`` messages, acking each; msg/s from consume start to the last ack."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=True)
        done = asyncio.Event()
        acked = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal acked
            await message.ack()
            acked += 1
            if acked >= count:
                done.set()

        lost: list[BaseException | None] = []

        def on_close(_connection: Any, exc: BaseException | None = None) -> None:
            lost.append(exc)
            done.set()

        connection.close_callbacks.add(on_close)
        started = time.perf_counter()
        tag = await queue.consume(on_message, no_ack=False)
        async with asyncio.timeout(max(60.0, count / 200)):
            await done.wait()
        if lost:
            raise RuntimeError(f"connection lost after {acked} acks (broker restarted?)")
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        return count / elapsed


# -- (b) the consent worker ----------------------------------------------------------------


@dataclass
class Probe:
    """Times the worker from outside: when consuming started, when each batch was settled."""

    started: float = 0.0
    count: int = 0
    target: int = 0
    finished: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    latencies_ms: list[float] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    def reset(self, target: int) -> None:
        self.started, self.count, self.target, self.finished = 0.0, 0, target, 0.0
        self.done = asyncio.Event()
        self.latencies_ms, self.batches = [], []

    def consuming(self, worker: str) -> None:
        """``Observer``: the consumer started (the clock of the run starts)."""
        self.started = time.perf_counter()

    def settled(self, worker: str, raws: Sequence[AbstractIncomingMessage]) -> None:
        """``Observer``: a batch committed and was acknowledged."""
        self.record(raws)

    def record(self, raws: Sequence[AbstractIncomingMessage]) -> None:
        now_us = time.time_ns() // 1000
        self.batches.append(len(raws))
        for raw in raws:
            sent_us = (raw.headers or {}).get(SENT_HEADER)
            if isinstance(sent_us, int):
                self.latencies_ms.append((now_us - sent_us) / 1000)
        self.count += len(raws)
        if self.count >= self.target and not self.finished:
            self.finished = time.perf_counter()
            self.done.set()


PROBE = Probe()


#: The store key of the run (None: a plain store, ``--encryption none``).
STORE_KEY: list[bytes | None] = [None]


def store_rows(settings: Settings, sql: str) -> list[Any]:
    """Rows of one query on the run's store: the SQLite file, or the PostgreSQL schema."""
    if settings.store_url is not None:
        return asyncio.run(_postgres_rows(settings.store_url.get_secret_value(), sql))
    conn = connect_file(settings.db_path, STORE_KEY[0])
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


async def _postgres_rows(url: str, sql: str) -> list[Any]:
    base, _, schema = url.partition("?search_path=")
    conn = await asyncpg.connect(base, server_settings={"search_path": schema} if schema else {})
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def store_count(settings: Settings, sql: str) -> int:
    return int(store_rows(settings, sql)[0][0])


async def count_in(settings: Settings, sql: str) -> int:
    return await asyncio.to_thread(store_count, settings, sql)


async def wait_for(predicate: Any, within: float, interval: float = 0.01) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling in-process counters
            await asyncio.sleep(interval)


async def worker_run(settings: Settings, count: int) -> dict[str, Any]:
    """Start the consent worker on a pre-filled queue; time commits and the relay."""
    PROBE.reset(count)
    service = Service(settings, [ConsentWorker()], schemas=registry.schemas(), observer=PROBE)
    await service.start()
    try:
        async with asyncio.timeout(300):
            await PROBE.done.wait()
        elapsed = PROBE.finished - PROBE.started
        relay = service.outboxes.events
        await wait_for(lambda: relay.published >= count, 300)
        relay_elapsed = time.perf_counter() - PROBE.started
    finally:
        await service.stop()
    inbox = await count_in(settings, "SELECT count(*) FROM inbox")
    unpublished = await count_in(
        settings, "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
    )
    return {
        "rate": count / elapsed,
        "seconds": elapsed,
        "inbox_rows": inbox,
        "relay_published": relay.published,
        "relay_unpublished_rows": unpublished,
        "relay_done_s": relay_elapsed,
        "relay_rate": count / relay_elapsed,
        "mean_batch": statistics.fmean(PROBE.batches),
        "batches": len(PROBE.batches),
    }


# -- (b") the consent worker in N processes ---------------------------------------------------


@dataclass
class SharedProbe:
    """The ``Observer`` of a child process: counts settled messages in shared memory."""

    settled_count: Any  # multiprocessing.Value("q")
    first_consuming: Any  # multiprocessing.Value("d"), CLOCK_MONOTONIC, system-wide
    last_settled: Any  # multiprocessing.Value("d")

    def consuming(self, worker: str) -> None:
        now = time.monotonic()
        with self.first_consuming.get_lock():
            if self.first_consuming.value == 0 or now < self.first_consuming.value:
                self.first_consuming.value = now

    def settled(self, worker: str, raws: Sequence[AbstractIncomingMessage]) -> None:
        now = time.monotonic()
        with self.settled_count.get_lock():
            self.settled_count.value += len(raws)
            self.last_settled.value = max(self.last_settled.value, now)


def worker_child(settings: dict[str, Any], probe: SharedProbe, stop: Any) -> None:
    """Child process: the consent worker as ``privacyops run`` runs it, until told to stop."""

    async def run() -> None:
        plog.configure("warning", "json", open(os.devnull, "w"))  # noqa: SIM115, ASYNC230
        service = Service(
            Settings(**settings), [ConsentWorker()], schemas=registry.schemas(), observer=probe
        )
        await service.start()
        try:
            while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing event
                await asyncio.sleep(0.05)
        finally:
            await service.stop()

    asyncio.run(run())


async def processes_run(settings: Settings, count: int, processes: int) -> dict[str, Any]:
    """``count`` pre-published messages consumed by ``processes`` worker processes."""
    ctx = multiprocessing.get_context("spawn")
    probe = SharedProbe(ctx.Value("q", 0), ctx.Value("d", 0.0), ctx.Value("d", 0.0))
    stop = ctx.Event()
    kwargs = settings_kwargs(settings)
    children = [
        ctx.Process(target=worker_child, args=(kwargs, probe, stop)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        await wait_for(lambda: probe.settled_count.value >= count, 300, interval=0.02)
        elapsed = probe.last_settled.value - probe.first_consuming.value

        async def relayed() -> int:
            return await count_in(
                settings, "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
            )

        async with asyncio.timeout(300):
            while await relayed():  # noqa: ASYNC110 - polling another process's store
                await asyncio.sleep(0.1)
        relay_elapsed = time.monotonic() - probe.first_consuming.value
    finally:
        stop.set()
        for child in children:
            await asyncio.to_thread(child.join, 60)
            if child.is_alive():
                child.kill()
    return {
        "processes": processes,
        "rate": count / elapsed,
        "seconds": elapsed,
        "inbox_rows": await count_in(settings, "SELECT count(*) FROM inbox"),
        "relay_done_s": relay_elapsed,
    }


def settings_kwargs(settings: Settings) -> dict[str, Any]:
    """What a child process needs to build the same settings."""
    return {
        "amqp_url": settings.amqp_url.get_secret_value(),
        "namespace": settings.namespace,
        "db_path": settings.db_path,
        "key_dir": settings.key_dir,
        "db_encryption": settings.db_encryption,
        "store_url": settings.store_url.get_secret_value() if settings.store_url else None,
    }


# -- (c) latency at a steady rate ------------------------------------------------------------


def steady_publisher(url: str, exchange: str, rate: float, total: int, seed: int) -> None:
    """Child process: publish ``total`` messages at ``rate`` msg/s, each stamped at send."""

    async def run() -> None:
        rng = random.Random(seed)
        connection = await rabbit.connect(url, 10)
        channel = await rabbit.open_channel(connection, confirms=True)
        publisher = rabbit.ConfirmedPublisher(channel, 30)
        in_flight: set[asyncio.Task[None]] = set()

        async def send(i: int) -> None:
            sent_us = time.time_ns() // 1000  # an int: AMQP tables carry floats as float32
            moment = datetime.fromtimestamp(sent_us / 1e6, UTC)
            mid, body = consent_body(1_000_000 + i, rng, moment)
            await publisher.publish(
                exchange, "consent.changed", body, message_id=mid, headers={SENT_HEADER: sent_us}
            )

        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(i))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        await connection.close()

    asyncio.run(run())


async def latency_run(settings: Settings, rate: float, seconds: float) -> dict[str, Any]:
    total = max(1, int(rate * seconds))
    PROBE.reset(total)
    service = Service(settings, [ConsentWorker()], schemas=registry.schemas(), observer=PROBE)
    await service.start()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=steady_publisher,
        args=(AMQP_URL, Names(settings.namespace).events, rate, total, 99),
    )
    try:
        child.start()
        async with asyncio.timeout(seconds + 120):
            await PROBE.done.wait()
    finally:
        await asyncio.to_thread(child.join, 30)
        await service.stop()
    stored = await asyncio.to_thread(store_latencies, settings)
    lat = PROBE.latencies_ms
    return {
        "rate": rate,
        "messages": total,
        "publish_to_commit_ack_ms": {"p50": pct(lat, 0.50), "p99": pct(lat, 0.99)},
        "occurred_to_handled_ms": {"p50": pct(stored, 0.50), "p99": pct(stored, 0.99)},
        "mean_batch": statistics.fmean(PROBE.batches),
    }


def store_latencies(settings: Settings) -> list[float]:
    """occurred_at (stamped at send) to updated_at (handler clock), per applied message."""
    rows = store_rows(settings, "SELECT effective_at, updated_at FROM consent_state")
    return [
        (datetime.fromisoformat(u) - datetime.fromisoformat(e)).total_seconds() * 1000
        for e, u in rows
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- plumbing ------------------------------------------------------------------------------


async def purge(url: str, queues: Sequence[str]) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            queue = await channel.get_queue(name, ensure=True)
            await queue.purge()


async def delete_namespace(
    url: str, names: Names, raw_queue: str, delays: list[int], worker: str = "consent"
) -> None:
    """The run's raw queue, then the worker's topology."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(raw_queue)
        await topology.delete(channel, names, [worker], delays)


async def declare(settings: Settings, raw_queue: str, worker: type[Worker] = ConsentWorker) -> None:
    """The worker's topology, and the raw consumer's plain quorum queue beside it."""
    connection = await rabbit.connect(AMQP_URL, 10)
    async with connection:
        channel = await rabbit.open_channel(connection)
        await topology.declare(
            channel,
            Names(settings.namespace),
            {worker.name: worker.message_types()},
            settings.retry_delays_ms,
            settings.delivery_limit,
        )
        await channel.declare_queue(raw_queue, durable=True, arguments=QUORUM)


def say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, flush=True)


async def worker_phase(
    settings: Settings,
    count: int,
    level: str,
    log_to: TextIO,
    seed: int,
    quiet: bool,
    processes: int = 1,
) -> dict[str, Any]:
    names = Names(settings.namespace)
    plog.configure(level, "json", log_to)
    bodies = consent_bodies(count, seed)
    pub = await prepublish(AMQP_URL, names.events, "consent.changed", bodies)
    say(f"  published {count} to {names.queue('consent')} at {pub:,.0f} msg/s", quiet)
    if processes > 1:
        result = await processes_run(settings, count, processes)
    else:
        result = await worker_run(settings, count)
    await purge(AMQP_URL, [names.unrouted])
    return result


class Stores:
    """A fresh store per phase: a SQLite file in the run's directory, or a PostgreSQL
    schema in ``--store``'s database (dropped at the end)."""

    def __init__(self, base: Settings, tmp: Path, url: str | None) -> None:
        self.base, self.tmp, self.url = base, tmp, url
        self.schemas: list[str] = []

    async def phase(self, name: str) -> Settings:
        if self.url is None:
            return self.base.with_changes(db_path=self.tmp / f"{name}.db")
        schema = f"{self.base.namespace}_{name}"
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()
        self.schemas.append(schema)
        return self.base.with_changes(store_url=SecretStr(f"{self.url}?search_path={schema}"))

    async def drop(self) -> None:
        if not self.schemas:
            return
        conn = await asyncpg.connect(self.url)
        try:
            for schema in self.schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    names = Names(namespace)
    raw_queue = f"{namespace}.rawack"
    tmp = Path(tempfile.mkdtemp(prefix="consent-bench-"))
    base = Settings(
        amqp_url=SecretStr(AMQP_URL),
        namespace=namespace,
        db_path=tmp / "warning.db",
        key_dir=tmp / "keys",
        db_encryption=args.encryption,
    )
    STORE_KEY[0] = store_key(base)
    stores = Stores(base, tmp, args.store)
    n = args.messages
    results: dict[str, Any] = {
        "namespace": namespace,
        "messages": n,
        "batch_max": base.batch_max,
        "batch_window_ms": base.batch_window_ms,
        "prefetch": base.prefetch,
        "encryption": base.db_encryption if args.store is None else None,
        "store": "sqlite" if args.store is None else "postgresql",
        "logging": f"worker logs at warning for (b) and (c); info run renders to {args.log_file}",
    }
    log_file = open(args.log_file, "w")  # noqa: SIM115, ASYNC230 - closed in finally
    try:
        await declare(base, raw_queue)
        where = f"{tmp} ({base.db_encryption})" if args.store is None else "PostgreSQL"
        say(f"namespace {namespace}, store {where}, {n} messages", quiet)
        bodies = consent_bodies(n, seed=1)
        size = statistics.fmean(len(b) for _, b in bodies)
        results["body_bytes"] = round(size)
        pub = await prepublish(AMQP_URL, "", raw_queue, bodies)
        results["publish_rate"] = pub
        say(f"(a) published {n} x ~{size:.0f} B to {raw_queue} at {pub:,.0f} msg/s", quiet)
        raw = await raw_consumer_rate(AMQP_URL, raw_queue, n, base.prefetch)
        results["raw_ack_rate"] = raw
        say(f"(a) raw aio-pika consumer, ack only:      {raw:8,.0f} msg/s", quiet)

        say("(b) consent worker, logs at warning", quiet)
        b = await worker_phase(await stores.phase("warning"), n, "warning", log_file, 2, quiet)
        results["worker_warning"] = b
        results["ratio"] = b["rate"] / raw
        say(
            f"(b) consent worker end to end:            {b['rate']:8,.0f} msg/s "
            f"({b['seconds']:.2f} s, mean batch {b['mean_batch']:.0f}, inbox {b['inbox_rows']})",
            quiet,
        )
        say(
            f"    outbox relay: {b['relay_published']} consent.updated published "
            f"{b['relay_done_s']:.2f} s after start ({b['relay_rate']:,.0f} msg/s), "
            f"{b['relay_unpublished_rows']} unpublished rows",
            quiet,
        )
        say(f"    ratio b/a = {results['ratio']:.2f}  (target >= 0.45)", quiet)

        if args.processes > 1:
            k = args.processes
            say(f'(b") consent worker in {k} processes, logs at warning', quiet)
            bp = await worker_phase(
                await stores.phase("procs"), n, "warning", log_file, 4, quiet, processes=k
            )
            results["worker_processes"] = bp
            results["ratio_processes"] = bp["rate"] / raw
            results["speedup_processes"] = bp["rate"] / b["rate"]
            say(
                f'(b") consent worker, {k} processes:        {bp["rate"]:8,.0f} msg/s '
                f"({bp['seconds']:.2f} s, inbox {bp['inbox_rows']}, "
                f"relay done {bp['relay_done_s']:.2f} s)",
                quiet,
            )
            say(
                f'    ratio b"/a = {results["ratio_processes"]:.2f}  (target >= 0.65); '
                f'b"/b = {results["speedup_processes"]:.2f}',
                quiet,
            )

        if not args.skip_info:
            info = await stores.phase("info")
            say(f"(b') consent worker, info logs rendered to {args.log_file}", quiet)
            bi = await worker_phase(info, n, "info", log_file, 3, quiet)
            results["worker_info"] = bi
            results["ratio_info"] = bi["rate"] / raw
            say(
                f"(b') consent worker, info logs:           {bi['rate']:8,.0f} msg/s "
                f"(ratio {results['ratio_info']:.2f}; relay done {bi['relay_done_s']:.2f} s)",
                quiet,
            )

        plog.configure("warning", "json", log_file)
        half = b["rate"] / 2
        say(f"(c) latency at half peak: {half:,.0f} msg/s for {args.seconds:g} s", quiet)
        lat = await latency_run(await stores.phase("latency"), half, args.seconds)
        results["latency"] = lat
        pc, st = lat["publish_to_commit_ack_ms"], lat["occurred_to_handled_ms"]
        say(
            f"(c) publish -> commit+ack: p50 {pc['p50']:.1f} ms, p99 {pc['p99']:.1f} ms; "
            f"occurred_at -> updated_at (store): p50 {st['p50']:.1f} ms, p99 {st['p99']:.1f} ms "
            f"(mean batch {lat['mean_batch']:.1f})",
            quiet,
        )
    finally:
        await delete_namespace(AMQP_URL, names, raw_queue, base.retry_delays_ms)
        await stores.drop()
        log_file.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="per phase (default 20000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency phase length")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--log-file", default="/dev/null", help="where worker logs go")
    parser.add_argument("--skip-info", action="store_true", help="skip the info-logging run")
    parser.add_argument(
        "--encryption",
        choices=["sqlcipher", "none"],
        default="sqlcipher",
        help="store encryption at rest (default sqlcipher, as deployed)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="a postgresql:// database to run the worker phases on (a schema per phase, "
        "dropped at the end); default: a temporary SQLite file per phase",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help='also run phase (b") with N worker processes on one queue (default 1: skip it)',
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    figures = asyncio.run(main(arguments))
    if arguments.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
