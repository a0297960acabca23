"""What the audit hash chain costs a store transaction, with the broker out of the picture.

    .venv/bin/python bench/audit_chain_cost.py                       # SQLite (SQLCipher)
    .venv/bin/python bench/audit_chain_cost.py --store-url postgresql://...?search_path=s

Commits ``--batches`` transactions shaped like a consent batch (``--batch`` messages,
each one upsert, one history insert, one audit row, one outbox event and one inbox
row) into two fresh stores of the same kind, one with the chain's write hook and one
without, alternating batch by batch so both see the same machine load, and prints
the commit rate of each and the ratio. The end-to-end figure is
``bench/consent_throughput.py`` (README "Benchmark"); this one isolates the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from config.settings import Settings
from infra.audit.chain import AuditChain
from infra.keys import store_key
from infra.runtime.session import all_schemas
from infra.runtime.worker import Effects
from infra.store import PostgresStore, SqliteStore, Store, migrations
from workers import registry

UPSERT = (
    "INSERT INTO bench_state (tenant_id, subject_ref, status) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET status = excluded.status"
)
HISTORY = "INSERT INTO bench_history (tenant_id, subject_ref, status, at) VALUES (?, ?, ?, ?)"
INBOX = (
    "INSERT INTO inbox (worker, tenant_id, message_id, type, processed_at) VALUES (?, ?, ?, ?, ?)"
)
TABLES = """
CREATE TABLE IF NOT EXISTS bench_state (tenant_id TEXT NOT NULL, subject_ref TEXT NOT NULL,
    status TEXT NOT NULL, PRIMARY KEY (tenant_id, subject_ref));
CREATE TABLE IF NOT EXISTS bench_history (tenant_id TEXT NOT NULL, subject_ref TEXT NOT NULL,
    status TEXT NOT NULL, at TEXT NOT NULL);
"""


async def build(where: Path, url: str | None, chain: bool, key: bytes | None) -> Store:
    hooks = (AuditChain(),) if chain else ()
    name = "chain" if chain else "plain"
    store: Store
    if url is not None:
        base, _, schema = url.partition("?search_path=")
        store = PostgresStore(f"{base}?search_path={schema}_{name}", hooks=hooks)
    else:
        store = SqliteStore(where / f"{name}.db", key=key, hooks=hooks)
    await store.open()
    await migrations.migrate(store, all_schemas(registry.schemas()))
    async with store.transaction() as tx:
        await tx.execute_script(TABLES)
    return store


async def batch(store: Store, size: int, seq: int) -> float:
    now = datetime.now(UTC).isoformat()
    started = time.perf_counter()
    async with store.transaction() as tx:
        for i in range(size):
            effects = Effects.standalone("consent", "acme")
            subject = f"debtor-{seq}-{i}"
            effects.write(UPSERT, ("acme", subject, "granted"))
            effects.write(HISTORY, ("acme", subject, "granted", now))
            effects.audit("consent_applied", subject, channel="sms", status="granted")
            tx.stage_all(effects.writes)
            tx.stage(INBOX, ("consent", "acme", str(uuid.uuid4()), "consent.changed", now))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, float]:
    where = Path(tempfile.mkdtemp(prefix="audit-chain-bench-"))
    key = None
    if args.store_url is None and args.encryption == "sqlcipher":
        key = store_key(Settings(key_dir=where / "keys", db_encryption="sqlcipher"))
    stores = {flag: await build(where, args.store_url, flag, key) for flag in (False, True)}
    spent = {False: 0.0, True: 0.0}
    try:
        for n in range(args.batches):
            for flag in (False, True) if n % 2 else (True, False):
                spent[flag] += await batch(stores[flag], args.batch, n)
    finally:
        for store in stores.values():
            await store.close()
        shutil.rmtree(where, ignore_errors=True)
    rows = args.batches * args.batch
    plain, chained = rows / spent[False], rows / spent[True]
    return {"without_chain_msg_s": plain, "with_chain_msg_s": chained, "ratio": chained / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100, help="messages a transaction")
    parser.add_argument("--encryption", choices=["sqlcipher", "none"], default="sqlcipher")
    parser.add_argument(
        "--store-url",
        help="PostgreSQL URL with ?search_path=PREFIX (schemas PREFIX_chain and"
        " PREFIX_plain must exist); default SQLite",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures))
        return
    print(f"without the chain: {figures['without_chain_msg_s']:,.0f} msg/s committed")
    print(f"with the chain:    {figures['with_chain_msg_s']:,.0f} msg/s committed")
    print(f"ratio with/without = {figures['ratio']:.3f}")


if __name__ == "__main__":
    main()
