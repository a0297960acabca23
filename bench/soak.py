"""Soak: a long stream of consent messages through one worker process (issue 14).

    .venv/bin/python bench/soak.py [--messages 1000000] [--every 100000] [--subjects 10000]

Starts ``privacyops run --worker consent`` as a subprocess on a fresh SQLite store and
namespace (the machine's broker, queues deleted at the end), publishes with confirms
while keeping the worker queue's backlog under ``--backlog`` (the broker's memory is not
what is measured), and every ``--every`` messages consumed prints the worker's RSS
(VmRSS), the interval's throughput, the inbox and event_outbox rows (pruned after a
short retention here: ``PRIVACYOPS_INBOX_RETENTION_DAYS`` set to a minute) and the
store's size. Exit code 1 if the RSS ends above 150 MB or a message is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faultkit.common import (
    AMQP_URL,
    consent_changed,
    delete_namespace,
    privacyops_bin,
    queue_depth,
    worker_env,
)
from bench.faultkit.scenarios import publish_all
from config.settings import Settings
from messages.errors import BrokerUnavailable
from messages.names import Names

LIMIT_MB = 150


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rows(db: Path, table: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def store_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6


async def main(args: argparse.Namespace) -> int:
    home = Path(tempfile.mkdtemp(prefix="privacyops-soak-"))
    try:
        return await soak(args, home)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


async def soak(args: argparse.Namespace, home: Path) -> int:
    settings = Settings(
        amqp_url=AMQP_URL,
        namespace=f"soak{uuid.uuid4().hex[:8]}",
        db_path=home / "store.db",
        key_dir=home / "keys",
        db_encryption="none",
        db_synchronous="normal",
        log_format="json",
    )
    names = Names(settings.namespace)
    env = {
        **worker_env(settings),
        "PRIVACYOPS_INBOX_RETENTION_DAYS": str(60 / 86_400),
        "PRIVACYOPS_PRUNE_INTERVAL_S": "15",
        "PRIVACYOPS_DB_SYNCHRONOUS": "normal",
        "PRIVACYOPS_LOG_LEVEL": "warning",
    }
    log = (home / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: ASYNC220 - one long-running child, polled below
        [privacyops_bin(), "run", "--migrate"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    queue = names.queue("consent")
    url = settings.amqp_url.get_secret_value()
    published = 0
    checkpoint = args.every
    started = last_time = time.monotonic()
    last_count = 0
    samples: list[float] = []
    print(f"# {args.messages} messages, {args.subjects} subjects, worker pid {worker.pid}")
    print("| consumed | RSS MB | msg/s (interval) | inbox rows | event_outbox rows | store MB |")
    print("|---|---|---|---|---|---|")
    try:
        await asyncio.sleep(3)
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}")
            try:
                depth = await queue_depth(url, queue)
                # applied and committed (history is never pruned; the inbox is)
                consumed = await asyncio.to_thread(rows, settings.db_path, "consent_history")
            except Exception:  # noqa: BLE001 - the worker declares the queue and the tables
                await asyncio.sleep(1)
                continue
            while consumed >= checkpoint:
                now = time.monotonic()
                rate = (consumed - last_count) / max(now - last_time, 1e-6)
                mb = rss_mb(worker.pid)
                samples.append(mb)
                print(
                    f"| {checkpoint:>9,} | {mb:6.1f} | {rate:8.0f} | "
                    f"{rows(settings.db_path, 'inbox'):>9,} | "
                    f"{rows(settings.db_path, 'event_outbox'):>9,} | "
                    f"{store_mb(settings.db_path):7.1f} |",
                    flush=True,
                )
                last_time, last_count = now, consumed
                checkpoint += args.every
            if consumed >= args.messages:
                break
            if published < args.messages and depth < args.backlog:
                chunk = min(args.chunk, args.messages - published)
                batch = [
                    consent_changed(f"soak-{(published + i) % args.subjects:06d}")
                    for i in range(chunk)
                ]
                for attempt in range(30):  # the machine's broker is shared: ride out a blip
                    try:
                        await publish_all(url, settings.namespace, batch)
                        break
                    except BrokerUnavailable:
                        print(f"# publish retried ({attempt + 1}): broker unavailable", flush=True)
                        await asyncio.sleep(5)
                else:
                    raise RuntimeError("the broker stayed away")
                published += chunk  # a copy published twice is absorbed by the inbox
            else:
                await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        print(
            f"# {args.messages:,} consumed in {elapsed:.0f} s ({args.messages / elapsed:.0f} msg/s)"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log.close()
        await delete_namespace(url, names, ["consent"], settings.retry_delays_ms)
    history = rows(settings.db_path, "consent_history")
    print(
        f"# consent_history rows {history:,} (kept: the legal record), "
        f"notification_outbox rows {rows(settings.db_path, 'notification_outbox'):,}"
    )
    worst = max(samples) if samples else float("nan")
    spread = (max(samples) - min(samples[1:] or samples)) if samples else float("nan")
    print(f"# RSS max {worst:.1f} MB, spread after the first checkpoint {spread:.1f} MB")
    ok = history == args.messages and worst < LIMIT_MB
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--keep", action="store_true", help="keep the store and the log")
    sys.exit(asyncio.run(main(parser.parse_args())))
