"""DSR latency benchmark: seed a large store, then time access gathering and erasure.

    python bench/dsr_latency.py --debtors 200000     # prints figures; a few minutes

Seeds N debtors (with contact points, accounts, payments, communications and notes)
into a fresh SQLite file, then for a random sample of subjects measures:

* access gathering: every data-map table for one subject (``workers.dsr.gather``),
  plus the full package (zip + encryption) for comparison;
* erasure: holds evaluated, data erased or restricted, in one committed transaction.

Targets (issue 3): access gathering p95 <= 100 ms, erasure p95 <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from config.datamap import load_datamap, load_retention
from config.settings import Settings
from infra.keys import Keys
from infra.runtime.session import all_schemas
from infra.runtime.worker import Effects
from infra.store import migrations, open_store
from workers import registry
from workers.dsr import package
from workers.dsr.erasure import Eraser
from workers.dsr.gather import gather
from workers.platform.seed import seed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(debtors: int, samples: int, db: Path) -> dict[str, object]:
    settings = Settings(db_path=db, key_dir=db.parent / "keys")
    store = open_store(settings)
    await store.open()
    await migrations.migrate(store, all_schemas(registry.schemas()))
    started = time.perf_counter()
    rows = await seed(store, ["acme"], debtors)
    seeding_s = time.perf_counter() - started
    datamap, retention = load_datamap(), load_retention()
    eraser = Eraser(datamap, retention, b"k" * 32)
    key = Keys.from_settings(settings).export
    rng = random.Random(7)
    subjects = [f"acme-d{rng.randrange(debtors):07d}" for _ in range(samples * 2)]
    access, packaged, erasure = [], [], []
    for subject in subjects[:samples]:
        t0 = time.perf_counter()
        async with store.transaction() as tx:
            data = await gather(tx, datamap, "acme", subject, provided_only=False)
        t1 = time.perf_counter()
        doc = package.document(data, datamap, retention, "bench", portable=False)
        package.seal(
            package.build_zip(doc),
            key,
            db.parent / "exports",
            subject,
            datetime.now(UTC),
            timedelta(hours=1),
        )
        t2 = time.perf_counter()
        access.append((t1 - t0) * 1000)
        packaged.append((t2 - t0) * 1000)
    for subject in subjects[samples:]:
        effects = Effects.standalone("dsr", "acme", actor="bench")
        t0 = time.perf_counter()
        async with store.transaction() as tx:
            await eraser.erase(tx, effects, subject, "bench", datetime.now(UTC).date())
            tx.stage_all(effects.writes)
        erasure.append((time.perf_counter() - t0) * 1000)
    await store.close()
    return {
        "debtors": debtors,
        "rows_seeded": rows,
        "seeding_s": round(seeding_s, 1),
        "store_mb": round(sum(f.stat().st_size for f in db.parent.glob(db.name + "*")) / 2**20),
        "samples": samples,
        "access_gather_ms": {
            "p50": round(statistics.median(access), 2),
            "p95": round(pct(access, 0.95), 2),
        },
        "access_package_ms": {
            "p50": round(statistics.median(packaged), 2),
            "p95": round(pct(packaged, 0.95), 2),
        },
        "erasure_ms": {
            "p50": round(statistics.median(erasure), 2),
            "p95": round(pct(erasure, 0.95), 2),
        },
        "targets": {"access_gather_p95_ms": 100, "erasure_p95_ms": 250},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debtors", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(main(args.debtors, args.samples, Path(folder) / "bench.db"))
    if args.json:
        print(json.dumps(result))
    else:
        for key_name, value in result.items():
            print(f"{key_name:>18}: {value}")
