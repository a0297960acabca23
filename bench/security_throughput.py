"""Security throughput benchmark: the security worker against a raw ack-only consumer.

    .venv/bin/python bench/security_throughput.py                  # ~1 minute on 2 cores
    .venv/bin/python bench/security_throughput.py --messages 20000 --fingerprints 0.01 --json

In one run, with its own namespace and a temporary SQLite file, deleting its queues and
exchanges at the end:

(a) pre-publishes N ``security.alert`` bodies into a plain quorum queue and times a raw
    aio-pika consumer that only acks (prefetch = the worker's); the raw consumer, the
    publisher and the batch probe are reused from bench/consent_throughput.py;
(b) pre-publishes the same kind of N alerts (distinct alert ids; 1% distinct fingerprints
    by default, spread over three tenants) into the security worker's queue and times a
    ``Service`` running the security worker with the default batch settings until every
    message is committed and acknowledged. Logs at ``warning``; unless ``--skip-info``,
    again with ``info`` logs (one audit event per alert) rendered to ``--log-file``.

One alert in ten carries suspected personal data and three affected subjects, so the run
includes compromise handling (report records, notices, account locks) and not only joins.

Issue 4's target: rate(b) / rate(a) >= 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

# bench/consent_throughput.py, on sys.path as the script's directory.
from consent_throughput import (
    PROBE,
    STORE_KEY,
    declare,
    delete_namespace,
    prepublish,
    raw_consumer_rate,
    say,
    store_count,
    wait_for,
)
from pydantic import SecretStr

from config.settings import Settings
from infra import logging as plog
from infra.keys import store_key
from infra.runtime.service import Service
from messages.names import Names
from workers import registry
from workers.security import SecurityWorker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
TENANTS = ("acme", "bravo-collect", "cape-recoveries")
CATEGORIES = ("brute_force", "credential_stuffing", "unauthorized_access", "malware")
DESCRIPTION = "Repeated failed sign-ins from one network range against the debtor portal; "


def alert_body(i: int, rng: random.Random, fingerprints: int, base: datetime) -> tuple[str, bytes]:
    """One security.alert (~600 bytes); ``i % fingerprints`` picks its fingerprint."""
    fp = i % fingerprints
    message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    compromise = i % 10 == 0
    payload: dict[str, Any] = {
        "alert_id": f"alert-{i:07d}-{rng.getrandbits(24):06x}",
        "source": "auth_service",
        "category": CATEGORIES[fp % len(CATEGORIES)],
        "severity_hint": "medium",
        "detected_at": (base + timedelta(milliseconds=i)).isoformat(),
        "target": {"system": f"portal-{fp:04d}", "account_ids": [f"acc-{fp:04d}"]},
        "personal_data_involved": "suspected" if compromise else "unknown",
        "data_categories": ["identity", "contact"] if compromise else [],
        "affected_subjects": [f"debtor-{fp:04d}-{n}" for n in range(3)] if compromise else [],
        "description": DESCRIPTION * 2,
    }
    body = {
        "message_id": message_id,
        "type": "security.alert",
        "version": 1,
        "tenant_id": TENANTS[fp % len(TENANTS)],
        "occurred_at": (base + timedelta(milliseconds=i)).isoformat(),
        "payload": payload,
    }
    return message_id, json.dumps(body, separators=(",", ":")).encode()


def alert_bodies(count: int, fingerprints: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(minutes=30)
    return [alert_body(i, rng, fingerprints, base) for i in range(count)]


async def worker_run(settings: Settings, count: int) -> dict[str, Any]:
    PROBE.reset(count)
    service = Service(
        settings, [SecurityWorker(settings)], schemas=registry.schemas(), observer=PROBE
    )
    await service.start()
    try:
        async with asyncio.timeout(300):
            await PROBE.done.wait()
        elapsed = PROBE.finished - PROBE.started
        relay = service.outboxes.events
        events = store_count(settings, "SELECT count(*) FROM event_outbox")
        await wait_for(lambda: relay.published >= events, 120)
    finally:
        await service.stop()
    db = settings
    return {
        "rate": count / elapsed,
        "seconds": elapsed,
        "mean_batch": statistics.fmean(PROBE.batches),
        "inbox_rows": store_count(db, "SELECT count(*) FROM inbox"),
        "incidents": store_count(db, "SELECT count(*) FROM security_incidents"),
        "alerts": store_count(db, "SELECT sum(alert_count) FROM security_incidents"),
        "timeline_rows": store_count(db, "SELECT count(*) FROM security_timeline"),
        "notices": store_count(db, "SELECT count(*) FROM notification_outbox"),
        "reports": store_count(db, "SELECT count(*) FROM security_reports"),
        "events": events,
    }


async def worker_phase(
    settings: Settings, n: int, fingerprints: int, level: str, log_to: TextIO, seed: int
) -> dict[str, Any]:
    plog.configure(level, "json", log_to)
    names = Names(settings.namespace)
    bodies = alert_bodies(n, fingerprints, seed)
    await prepublish(AMQP_URL, names.events, "security.alert", bodies)
    return await worker_run(settings, n)


def report(label: str, b: dict[str, Any], raw: float, quiet: bool) -> None:
    say(
        f"{label} {b['rate']:8,.0f} msg/s ({b['seconds']:.2f} s, mean batch "
        f"{b['mean_batch']:.0f}); ratio to raw {b['rate'] / raw:.2f} (target >= 0.70)",
        quiet,
    )
    say(
        f"    {b['incidents']} incidents, {b['alerts']} alerts joined, {b['timeline_rows']} "
        f"timeline rows, {b['reports']} reports, {b['notices']} notices, {b['events']} events",
        quiet,
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    names = Names(namespace)
    raw_queue = f"{namespace}.rawack"
    tmp = Path(tempfile.mkdtemp(prefix="security-bench-"))
    base = Settings(
        amqp_url=SecretStr(AMQP_URL),
        namespace=namespace,
        db_path=tmp / "warn.db",
        key_dir=tmp / "keys",
    )
    STORE_KEY[0] = store_key(base)  # the run's stores are encrypted, as deployed
    n = args.messages
    fingerprints = max(1, round(n * args.fingerprints))
    results: dict[str, Any] = {
        "namespace": namespace,
        "messages": n,
        "fingerprints": fingerprints,
        "batch_max": base.batch_max,
        "prefetch": base.prefetch,
    }
    log_file = open(args.log_file, "w")  # noqa: SIM115, ASYNC230 - closed in finally
    try:
        await declare(base, raw_queue, SecurityWorker)
        say(f"namespace {namespace}, store {tmp}, {n} alerts, {fingerprints} fingerprints", quiet)
        bodies = alert_bodies(n, fingerprints, seed=1)
        results["body_bytes"] = round(statistics.fmean(len(b) for _, b in bodies))
        started = time.perf_counter()
        await prepublish(AMQP_URL, "", raw_queue, bodies)
        say(f"(a) published {n} in {time.perf_counter() - started:.1f} s", quiet)
        raw = await raw_consumer_rate(AMQP_URL, raw_queue, n, base.prefetch)
        results["raw_ack_rate"] = raw
        say(f"(a) raw aio-pika consumer, ack only: {raw:8,.0f} msg/s", quiet)

        b = await worker_phase(base, n, fingerprints, "warning", log_file, 2)
        results["worker_warning"] = b
        results["ratio"] = b["rate"] / raw
        report("(b) security worker, logs at warning:", b, raw, quiet)
        if not args.skip_info:
            info = base.with_changes(db_path=tmp / "info.db")
            bi = await worker_phase(info, n, fingerprints, "info", log_file, 3)
            results["worker_info"] = bi
            results["ratio_info"] = bi["rate"] / raw
            report(f"(b') security worker, info logs to {args.log_file}:", bi, raw, quiet)
    finally:
        plog.configure("warning", "json", sys.stderr)
        await delete_namespace(
            AMQP_URL, names, raw_queue, base.retry_delays_ms, SecurityWorker.name
        )
        log_file.close()
    return results


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--fingerprints", type=float, default=0.01, help="share of distinct")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--log-file", default="/dev/null", help="where worker logs go")
    parser.add_argument("--skip-info", action="store_true", help="skip the info-logging run")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    figures = asyncio.run(main(arguments))
    if arguments.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
