"""The data map drives the rights: a table added to the map is covered without code."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from config.datamap import CONFIG_DIR, DataMap, load_datamap, load_retention
from config.settings import Settings
from infra.runtime.worker import Effects
from infra.sources import Sources
from infra.store import Store
from tests.support.helpers import migrated_store
from workers.dsr.erasure import Eraser
from workers.dsr.gather import gather

EXTRA = """
[tables.field_visits]
description = "Visits by tracing agents"
subject_column = "debtor_ref"
disclosed_to = ["tracing agency"]
provided_by_subject = false
hold_group = "conduct"
erasure = "delete_row"

[tables.field_visits.columns]
visited_on = { category = "communication" }
address_seen = { category = "contact", correctable = true }
"""


async def test_a_new_table_in_the_map_is_exported_and_erased(tmp_path: Path) -> None:
    map_file = tmp_path / "datamap.toml"
    map_file.write_text((CONFIG_DIR / "datamap.toml").read_text() + EXTRA)
    datamap = load_datamap(map_file)
    plain = Settings(db_path=tmp_path / "s.db", key_dir=tmp_path / "keys", db_encryption="none")
    async with migrated_store(plain) as store:
        await _erase_field_visits(store, datamap)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        left = conn.execute("SELECT tenant_id, debtor_ref FROM field_visits ORDER BY 1, 2")
        assert left.fetchall() == [("acme", "d-2"), ("bravo", "d-1")]


async def _erase_field_visits(store: Store, datamap: DataMap) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            "CREATE TABLE field_visits (tenant_id TEXT, "
            "debtor_ref TEXT, visited_on TEXT, address_seen TEXT)"
        )
        for tenant, ref in [("acme", "d-1"), ("acme", "d-2"), ("bravo", "d-1")]:
            await tx.execute(
                "INSERT INTO field_visits VALUES (?, ?, '2026-01-02', '1 Long St')", (tenant, ref)
            )
        data = await gather(
            Sources(plain_settings(store), store), tx, datamap, "acme", "d-1", provided_only=False
        )
    assert data.tables["field_visits"] == [
        {"visited_on": "2026-01-02", "address_seen": "1 Long St"}
    ]
    assert "tracing agency" in datamap.recipients(["field_visits"])
    assert datamap.correctable("field_visits.address_seen") is not None

    effects = Effects.standalone("dsr", "acme", actor="test")
    eraser = Eraser(datamap, load_retention(), b"k" * 32)
    async with store.transaction() as tx:
        holds = eraser.holds("acme", [], datetime.now(UTC).date())
        result = await eraser.erase_in_source(tx, "acme", "d-1", ["field_visits"], holds)
        eraser.record(effects, "d-1", "r-1", ["field_visits"], result, holds)
        tx.stage_all(effects.writes)
    assert result.erased == {"field_visits": 1}


def plain_settings(store: Store) -> Settings:
    return Settings(db_encryption="none")


def test_cli_seed_list_and_show(tmp_path: Path) -> None:
    env = {
        "PRIVACYOPS_DB_PATH": str(tmp_path / "cli.db"),
        "PRIVACYOPS_KEY_DIR": str(tmp_path / "keys"),
        "PRIVACYOPS_DB_ENCRYPTION": "none",
        "PATH": "/usr/bin:/bin",
    }
    exe = str(Path(sys.executable).parent / "privacyops")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    seeded = run("seed", "--tenants", "acme,bravo", "--debtors", "25")
    assert seeded.returncode == 0, seeded.stderr
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        assert conn.execute("SELECT count(*) FROM debtors").fetchone() == (50,)
        conn.execute(
            "INSERT INTO dsr_requests (tenant_id, request_id, kind, regime, subject_ref, status,"
            " identity_verified, received_at, due_on, reply_channel, details, message_id,"
            " updated_at) VALUES ('acme', 'R-1', 'access', 'popia', 'acme-d0000001',"
            " 'awaiting_verification', 0, '2026-01-01T00:00:00+00:00', '2026-02-01', 'email',"
            " '{\"kind\": \"access\"}', 'm', 'now')"
        )
    listed = run("dsr", "list", "--overdue", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"deadline": "overdue"' in listed.stdout
    assert run("dsr", "show", "R-1").returncode == 0
    assert run("dsr", "show", "R-404").returncode == 1
    assert run("seed", "--debtors", "0").returncode == 2


async def test_every_column_of_every_mapped_table_is_classified(tmp_path: Path) -> None:
    """Checked against the live schema: an unclassified column is missed by access and erasure."""
    datamap = load_datamap()
    async with (
        migrated_store(Settings(db_path=tmp_path / "s.db")) as store,
        store.transaction() as tx,
    ):
        live = {name: await tx.columns(name) for name in datamap.tables}
    for name, columns in live.items():
        assert columns, f"{name} is in the data map but not in the store"
        table = datamap.tables[name]
        classified = set(table.columns)
        unclassified = [c for c in columns if c != "tenant_id" and c not in classified]
        assert not unclassified, f"{name}: {unclassified} not classified in the data map"
        assert table.subject_column in classified
        if table.erasure == "deidentify":  # a kept row keeps no link back to the subject
            links = {c: s.erasure for c, s in table.columns.items() if s.category == "link"}
            assert set(links.values()) <= {"deidentify", "null"}, (name, links)
