"""A versioned store: numbered migrations, refused when behind, a store from before versions.

``tests/fixtures/store-main-b342242.db`` was written by privacyops at commit b342242, before
the store had a schema version: seeded debtors, consent changes, an access request and a
security incident processed by the four workers of that day.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from bench.faultkit.common import WorkerProcess
from config.settings import Settings
from infra.audit.verify import verify as audit_verify
from infra.keys import Keys
from infra.publisher import Publisher
from infra.runtime.session import all_schemas
from infra.store import migrations, open_store
from infra.store.migrations import Migration, Schema
from messages.errors import StoreOutOfDate
from messages.names import Names
from tests.support.db import sql
from tests.support.helpers import (
    BIN,
    ServiceFactory,
    consent_changed,
    delete_namespace,
    run_cli,
    wait_until,
)
from workers import registry
from workers.consent import ConsentWorker
from workers.dsr import DsrWorker

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "store-main-b342242.db"


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def legacy(settings: Settings) -> Path:
    shutil.copy(FIXTURE, settings.db_path)
    return settings.db_path


def test_migrations_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        Schema("x", (Migration(2, "two", {"sqlite": ""}),))
    first = Schema("x", (Migration(1, "one", {"sqlite": ""}),))
    with pytest.raises(ValueError, match="two different schemas"):
        migrations.unique([first, Schema("x", ())])


@pytest.mark.stores("sqlite")  # the old store was a SQLite file: there is no older PostgreSQL
async def test_a_store_from_before_versions_is_refused_then_migrated_and_used(
    legacy: Path, settings: Settings, start_service: ServiceFactory, publisher: Publisher
) -> None:
    contacts_before = rows(legacy, "SELECT rowid, subject_ref, kind, value FROM contact_points")
    store = open_store(settings)
    await store.open()
    try:
        components = all_schemas(registry.schemas())
        assert {s.component: s.state for s in await migrations.status(store, components)} == {
            "runtime": "behind",
            "audit_chain": "behind",
            "platform": "behind",
            "console": "behind",
            "consent": "behind",
            "dsr": "behind",
            "notifier": "behind",
            "security": "behind",
        }
        with pytest.raises(StoreOutOfDate, match="privacyops db migrate"):
            await migrations.check(store, components)
        applied = await migrations.migrate(store, components)
        assert [(c, m.version) for c, m in applied][:8] == [
            ("runtime", 1),
            ("runtime", 2),
            ("runtime", 3),
            ("runtime", 4),
            ("runtime", 5),
            ("audit_chain", 1),  # on the runtime's audit_log, so right after it
            ("platform", 1),
            ("platform", 2),
        ]
        await migrations.check(store, components)
        assert await migrations.migrate(store, components) == []  # nothing left
    finally:
        await store.close()

    # What the old store held is still there, contact points keep their order as ids.
    assert rows(legacy, "SELECT id, subject_ref, kind, value FROM contact_points") == (
        contacts_before
    )
    assert rows(legacy, "SELECT count(*) FROM inbox") == [(8,)]
    assert "reason" in [r[1] for r in rows(legacy, "PRAGMA table_info(notification_outbox)")]

    # ...and the workers of today process messages on it.
    await start_service([ConsentWorker(), DsrWorker(settings)])
    await publisher.publish(consent_changed("acme-d0000003", status="withdrawn"))

    async def applied_now() -> bool:
        return rows(legacy, "SELECT count(*) FROM inbox") == [(9,)]

    await wait_until(applied_now)
    assert rows(legacy, "SELECT status FROM consent_state WHERE subject_ref = 'acme-d0000003'") == [
        ("withdrawn",)
    ]
    # The old audit rows stay as they were, unchained; the new ones start the chain.
    keys = Keys.from_settings(settings).audit.public_keys
    store = open_store(settings)
    await store.open()
    try:
        [acme] = await audit_verify(store, keys, "acme")
    finally:
        await store.close()
    assert (acme.ok, acme.rows > 0, acme.unchained > 0) == (True, True, True)


@pytest.mark.stores("sqlite")
def test_run_refuses_a_store_behind_the_code_and_db_migrate_fixes_it(
    legacy: Path, settings: Settings
) -> None:
    assert BIN.exists()
    refused = run_cli(settings, "run")
    assert refused.returncode == 2
    assert "store_out_of_date" in refused.stderr
    assert "privacyops db migrate" in refused.stderr
    assert run_cli(settings, "db", "status").returncode == 1

    migrated = run_cli(settings, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "platform: applied 2 (contact points get an id)" in migrated.stdout
    status = run_cli(settings, "db", "status", "--json")
    assert status.returncode == 0
    assert '"state": "behind"' not in status.stdout


@pytest.mark.stores("sqlite")
async def test_run_migrate_brings_the_old_store_up_to_date_then_processes(
    legacy: Path, settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    """``privacyops run --migrate`` (what scripts/start and the compose files run) on the
    store from before versions: it migrates, starts, applies a message, stops on SIGTERM."""
    worker = WorkerProcess(settings, tmp_path / "run.log")
    await worker.start()
    assert worker.proc is not None
    try:
        assert '"store_migrated"' in (tmp_path / "run.log").read_text()
        assert run_cli(settings, "db", "status").returncode == 0
        await publisher.publish(consent_changed("acme-d0000003", status="withdrawn"))

        async def applied() -> bool:
            return rows(legacy, "SELECT count(*) FROM inbox") == [(9,)]

        await wait_until(applied)
    finally:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await worker.proc.wait()
        await delete_namespace(
            settings.amqp_url.get_secret_value(),
            Names(settings.namespace),
            ["consent"],
            settings.retry_delays_ms,
        )
    assert code == 0
    assert rows(legacy, "SELECT status FROM consent_state WHERE subject_ref = 'acme-d0000003'") == [
        ("withdrawn",)
    ]


async def test_a_store_ahead_of_the_code_is_refused(settings: Settings) -> None:
    components = all_schemas(registry.schemas())
    store = open_store(settings)
    await store.open()
    try:
        await migrations.migrate(store, components)
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO schema_migrations VALUES ('consent', 99, 'from the future', 'now')"
            )
        with pytest.raises(StoreOutOfDate, match="newer privacyops"):
            await migrations.check(store, components)
        with pytest.raises(StoreOutOfDate):
            await migrations.migrate(store, components)
    finally:
        await store.close()


async def test_two_processes_migrating_at_once_apply_each_step_once(settings: Settings) -> None:
    components = all_schemas(registry.schemas())
    stores = [open_store(settings), open_store(settings)]
    for store in stores:
        await store.open()
    try:
        done = await asyncio.gather(*(migrations.migrate(s, components) for s in stores))
    finally:
        for store in stores:
            await store.close()
    total = sum(len(s.migrations) for s in components)
    assert sum(len(applied) for applied in done) == total
    assert sql(settings.db_path, "SELECT count(*) FROM schema_migrations") == [(total,)]
