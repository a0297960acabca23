"""Platform databases of the data-source tests (issue 13): a PostgreSQL database per test.

``platform_database`` creates a database of its own on the machine's PostgreSQL
(127.0.0.1:5432) and drops it afterwards; ``data_map`` writes a data map that puts
the named tables in the source ``platform``; ``move_to_platform`` moves the rows of
those tables from the embedded store (where ``start_dsr`` planted and seeded them)
into the platform database, so the data lives only where the map says.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench.faultkit.common import data_map as data_map
from infra.store.migrations import to_postgresql
from tests.support import db
from tests.support.db import connect
from workers.platform.tables import SOURCE_TABLES

#: The platform's personal-data tables (the consent tables are privacyops' own).
PLATFORM_TABLES = ("debtors", "contact_points", "accounts", "payments", "communications", "notes")


@contextmanager
def platform_database(admin_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, the path ``tests.support.db.connect`` knows it by) of a new, empty database."""
    name = f"platform_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    path = tmp_path / f"{name}.pg"
    db.register(path, f"{url}?search_path=public")
    try:
        with connect(path) as conn:
            for statement in to_postgresql(SOURCE_TABLES).split(";"):
                if statement.strip():
                    conn.execute(statement)
        yield url, path
    finally:
        db.unregister(path)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def move_to_platform(embedded: Path, platform: Path, tables: tuple[str, ...]) -> None:
    """Every row of ``tables`` moved from the embedded store into the platform database."""
    for table in tables:
        with connect(embedded, timeout=30) as conn:
            cursor = conn.execute(f"SELECT * FROM {table}")
            rows = [tuple(r) for r in cursor.fetchall()]
            names = [c for c in _columns(conn, embedded, table)]
        columns = [c for c in names if c != "id"]
        keep = [names.index(c) for c in columns]
        with connect(platform, timeout=30) as conn:
            marks = ", ".join("?" for _ in columns)
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [tuple(row[i] for i in keep) for row in rows],
            )
        with connect(embedded, timeout=30) as conn:
            conn.execute(f"DELETE FROM {table}")


def _columns(conn: object, path: Path, table: str) -> list[str]:
    if db.postgres_url(path) is None:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()]  # type: ignore[attr-defined]
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]
