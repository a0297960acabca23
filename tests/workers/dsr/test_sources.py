"""The rights act on the platform's own database (issue 13): real PostgreSQL platform databases.

Each test has a PostgreSQL database of its own on 127.0.0.1:5432 holding the platform's
tables (``tests/support/sources.py``), and privacyops' store on either store kind.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from infra.store.migrations import to_postgresql
from tests.support.db import connect, register, unregister
from tests.support.dsr import (
    DATAMAP,
    EMAIL,
    add_account,
    answered,
    off_loop,
    package_document,
    plant,
    request,
    sql,
    start_dsr,
    verified,
)
from tests.support.helpers import ServiceFactory, run_cli, wait_until
from tests.support.own_postgres import own_postgres
from tests.support.sources import (
    PLATFORM_TABLES,
    data_map,
    move_to_platform,
    platform_database,
)
from workers.platform.tables import SOURCE_TABLES

#: Tables split over the two kinds of source: the debts in PostgreSQL, the rest embedded.
DEBT_TABLES = ("accounts", "payments", "notes")


@pytest.fixture
def platform(postgres_admin_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with platform_database(postgres_admin_url, tmp_path) as found:
        yield found


async def start_on(
    settings: Settings,
    start_service: ServiceFactory,
    tmp_path: Path,
    platform: tuple[str, Path],
    tables: tuple[str, ...],
    *,
    url: str | None = None,
) -> tuple[Service, Settings]:
    """The DSR worker with ``tables`` in the platform database (their rows moved there)."""
    changed = settings.with_changes(
        sources={"platform": url or platform[0]}, datamap_path=data_map(tmp_path, tables)
    )
    service = await start_dsr(changed, start_service, tmp_path)
    await off_loop(move_to_platform, settings.db_path, platform[1], tables)
    return service, changed


def steps(db: Path, request_id: str) -> dict[str, str]:
    rows = sql(db, "SELECT source, status FROM dsr_steps WHERE request_id = ?", request_id)
    return {str(source): str(status) for source, status in rows}


def outcome(db: Path, request_id: str) -> dict[str, Any]:
    [(text,)] = sql(db, "SELECT outcome FROM dsr_requests WHERE request_id = ?", request_id)
    found: dict[str, Any] = json.loads(text)
    return found


async def test_access_and_erasure_with_holds_on_a_postgresql_platform_database(
    platform: tuple[str, Path],
    settings: Settings,
    start_service: ServiceFactory,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    _, changed = await start_on(settings, start_service, tmp_path, platform, PLATFORM_TABLES)
    db, pg = settings.db_path, platform[1]
    bravo_before = sql(pg, "SELECT * FROM debtors WHERE tenant_id = 'bravo' ORDER BY 2")

    await publisher.publish(request("r-see", "access"))
    assert await answered(db, "r-see") == "completed"
    document = package_document(db, changed, "r-see")
    assert document["tables"]["accounts"]["rows"][0]["account_id"] == "acc-1001"
    assert EMAIL in json.dumps(document["tables"]["contact_points"]["rows"])
    assert steps(db, "r-see") == {"embedded": "done", "platform": "done"}
    # tenant isolation: bravo's debtor-open (the same reference, in the same database) is not
    assert len(document["tables"]["debtors"]["rows"]) == 1
    assert "acc-2001" not in json.dumps(document)
    await publisher.publish(request("r-take", "portability"))
    assert await answered(db, "r-take") == "completed"
    portable = package_document(db, changed, "r-take")
    assert set(portable["tables"]) == {
        n for n, t in DATAMAP.tables.items() if t.provided_by_subject
    }

    # the open debt holds everything of debtor-open; debtor-gone's closed debt has expired
    await publisher.publish(request("r-open", "erasure"))
    await publisher.publish(request("r-gone", "erasure", "debtor-gone"))
    assert await answered(db, "r-open") == "partially_completed"
    assert await answered(db, "r-gone") == "completed"
    assert steps(db, "r-gone") == {"embedded": "done", "platform": "done"}
    assert outcome(db, "r-gone")["erased"]["debtors"] == 1
    for table in PLATFORM_TABLES:
        left = sql(pg, f"SELECT count(*) FROM {table} WHERE subject_ref = 'debtor-gone'")
        assert left == [(0,)], table
    assert sql(pg, "SELECT count(*) FROM accounts WHERE subject_ref = 'debtor-open'") == [(2,)]
    # the marks of what the platform keeps live in privacyops' store, not the platform's
    held = sql(
        db,
        "SELECT scope FROM restrictions WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'",
    )
    assert ("debtors",) in held
    assert ("accounts:acc-1001",) in held
    restricted = sql(
        db, "SELECT count(*) FROM event_outbox WHERE routing_key = 'subject.restricted'"
    )
    assert restricted != [(0,)]  # the platform is told, since its rows carry no mark
    # tenant isolation: bravo's debtor-open, same reference, is untouched
    assert sql(pg, "SELECT * FROM debtors WHERE tenant_id = 'bravo' ORDER BY 2") == bravo_before
    assert EMAIL not in repr(sql(db, "SELECT * FROM suppression_list"))
    assert sql(db, "SELECT count(*) FROM suppression_list WHERE tenant_id = 'acme'") != [(0,)]

    corrections = {"corrections": [{"field": "contact_points.email", "value": "new@example.org"}]}
    await publisher.publish(request("r-fix", "rectification", tenant="bravo", details=corrections))
    assert await answered(db, "r-fix") == "completed"
    assert sql(
        pg,
        "SELECT value FROM contact_points WHERE tenant_id = 'bravo' AND subject_ref ="
        " 'debtor-open' AND kind = 'email'",
    ) == [("new@example.org",)]
    shown = await off_loop(run_cli, changed, "dsr", "show", "r-gone")
    assert shown.returncode == 0, shown.stderr
    progress = {s["source"]: s for s in json.loads(shown.stdout)["steps"]}
    assert progress["platform"]["status"] == "done"
    assert progress["platform"]["outcome"]["erased"]["debtors"] == 1


async def test_tables_split_over_sqlite_and_postgresql_hold_per_record(
    platform: tuple[str, Path],
    settings: Settings,
    start_service: ServiceFactory,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    db, pg = settings.db_path, platform[1]

    def plant_two_debts() -> None:  # one open, one written off long ago (prescribed)
        plant(db, "bravo", "debtor-mixed", account="open", account_id="acc-open", id_number="x")
        with connect(db, timeout=30) as conn:
            add_account(
                conn, "bravo", "debtor-mixed", "acc-old", "written_off", paid="2016-01-01", note="n"
            )

    changed = settings.with_changes(
        sources={"platform": platform[0]}, datamap_path=data_map(tmp_path, DEBT_TABLES)
    )
    await start_dsr(changed, start_service, tmp_path)
    await off_loop(plant_two_debts)
    await off_loop(move_to_platform, db, pg, DEBT_TABLES)

    await publisher.publish(request("r-mixed", "erasure", "debtor-mixed", tenant="bravo"))
    assert await answered(db, "r-mixed") == "partially_completed"
    assert steps(db, "r-mixed") == {"embedded": "done", "platform": "done"}
    # the old debt's records went from PostgreSQL; the open debt's stay, restricted
    assert sql(pg, "SELECT account_id FROM accounts WHERE subject_ref = 'debtor-mixed'") == [
        ("acc-open",)
    ]
    kept = sql(pg, "SELECT account_id, bank_reference FROM payments WHERE account_id = 'acc-old'")
    assert kept == []  # de-identified: no link left
    assert sql(pg, "SELECT count(*) FROM notes WHERE account_id = 'acc-old'") == [(0,)]
    scopes = {
        s for (s,) in sql(db, "SELECT scope FROM restrictions WHERE subject_ref = 'debtor-mixed'")
    }
    assert {"accounts:acc-open", "payments:acc-open", "debtors"} <= scopes
    assert not any("acc-old" in s for s in scopes)
    # the embedded tables (identity, contacts) are held by the open debt: still there
    assert sql(db, "SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-mixed'") == [(1,)]


async def test_a_read_only_role_may_read_but_erasure_is_refused_cleanly(
    platform: tuple[str, Path],
    postgres_admin_url: str,
    settings: Settings,
    start_service: ServiceFactory,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    url, pg = platform
    role = f"reader_{uuid.uuid4().hex[:8]}"
    database = url.rsplit("/", 1)[1]
    grants = [
        f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pass'",
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
    ]
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        for statement in grants:
            conn.execute(statement)
    with psycopg.connect(url, autocommit=True) as conn:  # the README's read-only role
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader = url.replace("://root@", f"://{role}:reader-pass@")
    service: Service | None = None
    try:
        service, _ = await start_on(
            settings, start_service, tmp_path, platform, PLATFORM_TABLES, url=reader
        )
        db = settings.db_path
        await publisher.publish(request("r-read", "access", "debtor-gone"))
        assert await answered(db, "r-read") == "completed"
        before = sql(pg, "SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-gone'")

        await publisher.publish(request("r-erase", "erasure", "debtor-gone"))
        # privacyops' own consent records went; the platform refused: told, nothing changed
        assert await answered(db, "r-erase") == "partially_completed"
        assert steps(db, "r-erase") == {"embedded": "done", "platform": "failed"}
        [(error,)] = sql(
            db, "SELECT error FROM dsr_steps WHERE request_id = 'r-erase' AND source = 'platform'"
        )
        assert "permission denied" in error
        assert "permission denied" in outcome(db, "r-erase")["not_erased"]
        assert sql(pg, "SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-gone'") == before
        assert sql(pg, "SELECT count(*) FROM payments WHERE subject_ref = 'debtor-gone'") != [(0,)]
    finally:
        if service is not None:
            await service.stop()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON DATABASE {database} FROM {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.stores("sqlite")
def test_seed_source_and_datamap_check(
    settings: Settings, tmp_path: Path, platform: tuple[str, Path]
) -> None:
    """A newcomer's path: seed the platform database, check the map against it."""
    url, pg = platform
    changed = settings.with_changes(
        sources={"platform": url}, datamap_path=data_map(tmp_path, PLATFORM_TABLES)
    )
    seeded = run_cli(changed, "seed", "--source", "platform", "--tenants", "acme", "--debtors", "5")
    assert seeded.returncode == 0, seeded.stderr
    assert sql(pg, "SELECT count(*) FROM debtors") == [(5,)]
    checked = run_cli(changed, "datamap", "check", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["ok"] is True

    with connect(pg) as conn:
        conn.execute("ALTER TABLE debtors ADD COLUMN nickname TEXT")
        conn.execute("CREATE TABLE skip_traces (tenant_id TEXT, found_email TEXT, score INT)")
        conn.execute("ALTER TABLE notes DROP COLUMN author")
    checked = run_cli(changed, "datamap", "check", "--json")
    assert checked.returncode == 1
    problems = {(p["table"], p["column"]) for p in json.loads(checked.stdout)["problems"]}
    assert problems == {
        ("debtors", "nickname"),
        ("skip_traces", "found_email"),
        ("notes", "author"),
    }
    assert run_cli(changed, "datamap", "check").returncode == 1


@pytest.mark.stores("sqlite")
async def test_an_erasure_waits_while_the_platform_database_is_down_and_completes_once(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher, tmp_path: Path
) -> None:
    """PostgreSQL stopped mid-erasure (an instance of the test's own): the request waits on
    the retry tiers, resumes when the database is back, and completes exactly once."""
    db = settings.db_path
    with own_postgres() as instance:
        pg = tmp_path / "own.pg"
        register(pg, f"{instance.url}?search_path=public")
        with connect(pg) as conn:
            for statement in to_postgresql(SOURCE_TABLES).split(";"):
                if statement.strip():
                    conn.execute(statement)
        try:
            await start_on(settings, start_service, tmp_path, (instance.url, pg), PLATFORM_TABLES)
            await publisher.publish(request("r-warm", "access", "debtor-open"))
            assert await answered(db, "r-warm") == "completed"  # the source's pool is open

            await publisher.publish(request("r-down", "erasure", "debtor-gone", verified=False))
            assert await answered(db, "r-down") == "awaiting_verification"
            await off_loop(instance.stop)
            await publisher.publish(verified("r-down"))

            async def retried() -> bool:
                rows = sql(
                    db,
                    "SELECT max(attempts) FROM dsr_steps WHERE request_id = 'r-down'"
                    " AND status = 'pending'",
                )
                return bool(rows) and (rows[0][0] or 0) >= 3

            await wait_until(retried)
            # the holds are read from the platform's accounts: nothing may go without them
            assert steps(db, "r-down") == {"embedded": "pending", "platform": "pending"}
            assert sql(db, "SELECT status FROM dsr_requests WHERE request_id = 'r-down'") == [
                ("in_progress",)
            ]
            errors = sql(db, "SELECT error FROM dsr_steps WHERE request_id = 'r-down'")
            assert all(e is None or e.startswith("store_unavailable") for (e,) in errors)
            assert sql(
                db,
                "SELECT count(*) FROM notification_outbox WHERE kind = 'dsr_completed'"
                " AND context LIKE '%r-down%'",
            ) == [(0,)]

            await off_loop(instance.start)
            assert await answered(db, "r-down") == "completed"
        finally:
            unregister(pg)
        finals = sql(
            db,
            "SELECT count(*) FROM notification_outbox WHERE kind = 'dsr_completed'"
            " AND context LIKE '%r-down%'",
        )
        assert finals == [(1,)]
        erased_events = sql(
            db, "SELECT count(*) FROM event_outbox WHERE routing_key = 'subject.erased'"
        )
        assert erased_events == [(1,)]
        assert steps(db, "r-down") == {"embedded": "done", "platform": "done"}
        erased = sql(
            db,
            "SELECT details FROM audit_log WHERE action = 'subject_data_erased'"
            " AND subject_ref = 'debtor-gone'",
        )
        tables = [json.loads(d)["table"] for (d,) in erased]
        assert sorted(tables) == sorted(set(tables))  # each table erased once, none twice
        assert set(PLATFORM_TABLES) <= set(tables)
        with psycopg.connect(instance.url) as conn:
            left = conn.execute("SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-gone'")
            assert left.fetchone() == (0,)
            kept = conn.execute("SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-open'")
            assert kept.fetchone() == (2,)
