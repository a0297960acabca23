"""The fault suite at the issue's counts (issue 14): one table, zeros expected.

    .venv/bin/python bench/faults.py [--seed N] [--only kill,cluster,cut,sqlite,postgres]
                                     [--scale 1.0] [--lock-s 30]

Scenarios (tests/support/fault_scenarios.py; the CI tests run them small):

* kill -9 the worker (``privacyops run``) 20 times at seeded random points of a
  10,000-message stream (the seed is printed; ``--seed`` repeats a run);
* a 3-node RabbitMQ cluster of the bench's own (own node names, AMQP and distribution
  ports, data directories, one cookie): quorum queue on 3 nodes, the worker given every
  node's address, the node leading the worker queue killed -9 mid-stream;
* the network between worker and broker cut for 10 s (a TCP proxy the bench controls);
* SQLite locked by another process for 30 s;
* a PostgreSQL instance of the bench's own (pg_ctl, spare port) stopped for 10 s.

Columns: messages sent; lost (never applied); applied twice (two consent_history rows for
one message); downstream duplicates (``consent.updated`` events delivered more than once
to a downstream queue: the relay is at-least-once after a crash, downstream dedupes by
message_id); recovery time (each scenario's own: after a kill, from the restart or the
kill until the worker applied again; after an outage, from its end until it applied
again). Nothing here stops the machine's broker or PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faultkit import scenarios
from bench.faultkit.common import AMQP_URL, delete_namespace
from bench.faultkit.pg_instance import PgInstance
from bench.faultkit.rabbit_cluster import RabbitCluster
from bench.faultkit.tcp_proxy import TcpProxy
from config.settings import Settings
from infra import logging as plog
from messages.names import Names

ALL = ("kill", "cluster", "cut", "sqlite", "postgres")


def fresh_settings(**changes: object) -> Settings:
    home = Path(tempfile.mkdtemp(prefix="privacyops-faults-"))
    base = Settings(
        amqp_url=AMQP_URL,
        namespace=f"faults{uuid.uuid4().hex[:8]}",
        db_path=home / "store.db",
        key_dir=home / "keys",
        db_encryption="none",
        retry_delays_ms=[1_000, 5_000, 15_000, 30_000],
        batch_window_ms=5,
        shutdown_drain_s=5,
        connect_timeout_s=5,
        reconnect_interval_s=1.0,
        log_format="json",
    )
    return base.with_changes(**changes) if changes else base


async def cleaned(settings: Settings, run: Callable[[], Awaitable[scenarios.Row]]) -> scenarios.Row:
    """Run a scenario; then delete its queues and its temporary directory."""
    try:
        return await run()
    finally:
        try:
            if settings.amqp_url.get_secret_value() == AMQP_URL:
                await delete_namespace(
                    AMQP_URL, Names(settings.namespace), ["consent"], settings.retry_delays_ms
                )
        finally:
            shutil.rmtree(settings.db_path.parent, ignore_errors=True)


async def kill(seed: int, scale: float) -> scenarios.Row:
    s = fresh_settings()
    n = int(10_000 * scale)
    return await cleaned(s, lambda: scenarios.kill_worker(s, s.db_path.parent, n, 20, seed))


async def cluster(scale: float) -> scenarios.Row:
    nodes = RabbitCluster(3)
    try:
        started = time.monotonic()
        await asyncio.to_thread(nodes.start)
        print(f"# cluster of 3 started in {time.monotonic() - started:.0f} s", flush=True)
        s = fresh_settings(prefetch=100, batch_max=100)
        return await cleaned(
            s, lambda: scenarios.cluster_leader_killed(s, nodes, int(10_000 * scale))
        )
    finally:
        await asyncio.to_thread(nodes.close)


async def cut(scale: float) -> scenarios.Row:
    s = fresh_settings()
    target = urlsplit(AMQP_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    try:
        return await cleaned(s, lambda: scenarios.network_cut(s, proxy, int(10_000 * scale), 10))
    finally:
        await proxy.close()


async def sqlite(scale: float, lock_s: float) -> scenarios.Row:
    s = fresh_settings()
    return await cleaned(s, lambda: scenarios.sqlite_locked(s, int(5_000 * scale), lock_s))


async def postgres(scale: float) -> scenarios.Row:
    pg = PgInstance()
    try:
        await asyncio.to_thread(pg.start)
        s = fresh_settings(store_url=pg.url, connect_timeout_s=2)
        return await cleaned(s, lambda: scenarios.postgres_down(s, pg, int(5_000 * scale), 10))
    finally:
        await asyncio.to_thread(pg.close)


async def main(args: argparse.Namespace) -> int:
    plog.configure("warning", "json")
    wanted = args.only.split(",") if args.only else list(ALL)
    print(f"# seed {args.seed}  scale {args.scale}  scenarios {','.join(wanted)}", flush=True)
    runs: dict[str, Callable[[], Awaitable[scenarios.Row]]] = {
        "kill": lambda: kill(args.seed, args.scale),
        "cluster": lambda: cluster(args.scale),
        "cut": lambda: cut(args.scale),
        "sqlite": lambda: sqlite(args.scale, args.lock_s),
        "postgres": lambda: postgres(args.scale),
    }
    rows = []
    for name in wanted:
        started = time.monotonic()
        row = await runs[name]()
        rows.append(row)
        print(f"# {name}: {time.monotonic() - started:.0f} s  {row.line()}", flush=True)
    print()
    print(scenarios.HEADER)
    print("|" + "---|" * 7)
    for row in rows:
        print(row.line())
    bad = [r for r in rows if r.lost or r.applied_twice or r.dead_lettered]
    return 1 if bad else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    parser.add_argument("--only", help=f"comma-separated: {','.join(ALL)}")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--lock-s", type=float, default=30.0, help="SQLite lock (seconds)")
    sys.exit(asyncio.run(main(parser.parse_args())))
