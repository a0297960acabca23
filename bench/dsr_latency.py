"""DSR latency benchmark: the rights' real code path over the data sources (issue 13).

    python bench/dsr_latency.py --debtors 200000                       # all embedded
    python bench/dsr_latency.py --debtors 1000000 \\
        --source postgresql://root@127.0.0.1:5432/privacyops_bench       # platform in PG

With ``--source`` the platform's tables (debtors, contact points, accounts, payments,
communications, notes) live in that PostgreSQL database (the source ``platform``),
created and seeded with ``seed_source`` unless it already holds the tenant's N debtors;
privacyops' own store is a fresh SQLite file (SQLCipher, as deployed). For a random
sample of subjects it measures:

* access: gathering every table of every source for one subject (``gather``), and
  the full package (zip + encryption) for comparison;
* erasure: one erasure request's steps (``StepRunner.run_round``): each source's step
  claimed, run in the source's transaction and recorded, and the request answered;
* end to end, with the workers running on the local broker: from ``dsr.verified``
  published to the request's final notice committed to the notification outbox.

Goals: access p95 <= 100 ms, erasure p95 <= 250 ms, end to end p95 <= 1 s. The
erasure samples really erase: run it on a benchmark database, never a real one.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faultkit.common import data_map
from config.datamap import load_datamap, load_retention
from config.settings import Settings
from infra import logging as plog
from infra import topology
from infra.keys import Keys
from infra.publisher import Publisher
from infra.runtime.service import Service
from infra.runtime.session import all_schemas
from infra.runtime.worker import Effects, commit_effects
from infra.sources import Sources
from infra.store import Store, migrations, open_store
from messages.dsr import DsrRequested, DsrVerified, Regime, RequestKind
from messages.names import Names
from workers import registry
from workers.dsr import DsrWorker, package, steps
from workers.dsr.gather import gather
from workers.dsr.requests import DETAILS, Request
from workers.dsr.rules import Status
from workers.platform.seed import seed, seed_source

PLATFORM = ("debtors", "contact_points", "accounts", "payments", "communications", "notes")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p95": round(pct(values, 0.95), 2)}


async def fill(settings: Settings, store: Store, debtors: int) -> tuple[int, float]:
    """Seed the platform's data where the map puts it; (rows written, seconds)."""
    started = time.perf_counter()
    if not settings.sources:
        return await seed(store, ["acme"], debtors), time.perf_counter() - started
    sources = Sources(settings, store)
    try:
        platform = await sources.store("platform")
        async with platform.transaction() as tx:
            found = await tx.columns("debtors") and await tx.fetchone(
                "SELECT count(*) FROM debtors WHERE tenant_id = 'acme'"
            )
        if found and int(found[0]) > 0:
            return 0, 0.0  # seeded by an earlier run (less the subjects it erased)
        return await seed_source(platform, ["acme"], debtors), time.perf_counter() - started
    finally:
        await sources.close()


async def stored_request(store: Store, worker: DsrWorker, subject: str, kind: str) -> str:
    """A verified request in progress with its steps planned, as the handler leaves it."""
    rid = f"bench-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    effects = Effects.standalone("dsr", "acme", actor="bench", now=now)
    request = Request(
        tenant_id="acme",
        request_id=rid,
        kind=RequestKind(kind),
        regime=Regime.POPIA,
        subject_ref=subject,
        status=Status.IN_PROGRESS,
        verified=True,
        received_at=now,
        due_on=now.date() + timedelta(days=30),
        reply_channel="email",
        details=DETAILS.validate_python({"kind": kind}),
    )
    request.save(effects, "bench")
    steps.plan(effects, rid, 0, steps.sources_for(worker.datamap, request))
    await commit_effects(store, None, effects)
    return rid


async def direct(settings: Settings, debtors: int, samples: int) -> dict[str, Any]:
    """Access gathering and erasure rounds without the broker."""
    store = open_store(settings)
    await store.open()
    await migrations.migrate(store, all_schemas(registry.schemas()))
    rows, seeding_s = await fill(settings, store, debtors)
    datamap, retention = load_datamap(settings.datamap_path), load_retention()
    worker = DsrWorker(settings)
    runner = worker.attach(store, None)
    assert worker.sources is not None
    key = Keys.from_settings(settings).export
    rng = random.Random(7)
    subjects = [f"acme-d{rng.randrange(debtors):07d}" for _ in range(samples * 2)]
    access, packaged, erasure = [], [], []
    for subject in subjects[:samples]:
        t0 = time.perf_counter()
        async with store.transaction() as tx:
            data = await gather(worker.sources, tx, datamap, "acme", subject, provided_only=False)
        t1 = time.perf_counter()
        doc = package.document(data, datamap, retention, "bench", portable=False)
        package.seal(
            package.build_zip(doc),
            key,
            settings.export_dir,
            subject,
            datetime.now(UTC),
            timedelta(hours=1),
        )
        access.append((t1 - t0) * 1000)
        packaged.append((time.perf_counter() - t0) * 1000)
    for subject in subjects[samples:]:
        rid = await stored_request(store, worker, subject, "erasure")
        t0 = time.perf_counter()
        await runner.run_round("acme", rid, 0)
        erasure.append((time.perf_counter() - t0) * 1000)
    await worker.close()
    await store.close()
    return {
        "debtors": debtors,
        "rows_seeded": rows,
        "seeding_s": round(seeding_s, 1),
        "samples": samples,
        "access_gather_ms": figures(access),
        "access_package_ms": figures(packaged),
        "erasure_round_ms": figures(erasure),
        "_subjects_left": subjects,
    }


async def end_to_end(settings: Settings, debtors: int, samples: int, taken: set[str]) -> dict:
    """dsr.verified published -> the final notice committed, with the workers running."""
    service = Service(settings, [DsrWorker(settings)], schemas=registry.schemas())
    await service.start()
    rng = random.Random(11)
    subjects = [s for s in (f"acme-d{rng.randrange(debtors):07d}" for _ in range(samples * 3))]
    subjects = [s for s in dict.fromkeys(subjects) if s not in taken][:samples]
    latencies: list[float] = []
    try:
        async with Publisher.from_settings(settings) as publisher:
            for i, subject in enumerate(subjects):
                rid = f"e2e-{i}-{uuid.uuid4().hex[:8]}"
                kind = "erasure" if i % 2 else "access"
                await publisher.publish(_requested(rid, subject, kind))
                await _wait(service.store, rid, "awaiting_verification")
                t0 = time.perf_counter()
                await publisher.publish(_verified(rid))
                await _final_notice(service.store, rid)
                latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        await service.stop()
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=5)
        async with connection:
            await topology.delete(
                await connection.channel(),
                Names(settings.namespace),
                ["dsr"],
                settings.retry_delays_ms,
            )
    return {"samples": len(latencies), "verified_to_final_notice_ms": figures(latencies)}


def _requested(rid: str, subject: str, kind: str) -> DsrRequested:
    return DsrRequested.model_validate(
        {
            "tenant_id": "acme",
            "payload": {
                "request_id": rid,
                "kind": kind,
                "regime": "popia",
                "identity_verified": False,
                "subject": {"subject_ref": subject},
                "received_at": datetime.now(UTC).isoformat(),
                "details": {"kind": kind},
            },
        }
    )


def _verified(rid: str) -> DsrVerified:
    return DsrVerified.model_validate(
        {
            "tenant_id": "acme",
            "payload": {
                "request_id": rid,
                "verified_by": "bench",
                "method": "id_document",
                "verified_at": datetime.now(UTC).isoformat(),
            },
        }
    )


async def _wait(store: Store, rid: str, status: str, within: float = 30.0) -> None:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        async with store.transaction() as tx:
            row = await tx.fetchone("SELECT status FROM dsr_requests WHERE request_id = ?", (rid,))
        if row and row[0] == status:
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{rid} never reached {status}")


async def _final_notice(store: Store, rid: str, within: float = 30.0) -> None:
    deadline = time.perf_counter() + within
    like = f'%"request_id": "{rid}"%'
    while time.perf_counter() < deadline:
        async with store.transaction() as tx:
            row = await tx.fetchone(
                "SELECT count(*) FROM notification_outbox WHERE kind IN ('dsr_completed',"
                " 'dsr_refused') AND context LIKE ?",
                (like,),
            )
        if row and row[0]:
            return
        await asyncio.sleep(0.002)
    raise TimeoutError(f"{rid}: no final notice")


async def main(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    settings = Settings(
        db_path=folder / "bench.db",
        key_dir=folder / "keys",
        export_dir=folder / "exports",
        namespace=f"bench{uuid.uuid4().hex[:8]}",
        allow_unsigned=True,
        outbox_poll_s=1.0,
        log_level="warning",
        **(
            {"sources": {"platform": args.source}, "datamap_path": data_map(folder, PLATFORM)}
            if args.source
            else {}
        ),
    )
    result = await direct(settings, args.debtors, args.samples)
    taken = set(result.pop("_subjects_left"))
    if args.e2e:
        result["end_to_end"] = await end_to_end(settings, args.debtors, args.e2e, taken)
    result["source"] = "platform (PostgreSQL)" if args.source else "embedded (SQLite)"
    result["goals_ms"] = {"access_p95": 100, "erasure_p95": 250, "end_to_end_p95": 1000}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debtors", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--e2e", type=int, default=100, help="end-to-end samples (0: none)")
    parser.add_argument("--source", help="postgresql:// URL of the platform database")
    parser.add_argument("--json", action="store_true")
    cli = parser.parse_args()
    plog.configure("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(main(cli, Path(tmp)))
    if cli.json:
        print(json.dumps(found))
    else:
        for name, value in found.items():
            print(f"{name:>20}: {value}")
