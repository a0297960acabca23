"""The test's own store, read and written directly, whichever store the test runs on.

Tests run once on SQLite and once on PostgreSQL (``settings`` in conftest). They look
at the store with plain SQL through ``connect(settings.db_path)``: for SQLite that is
``sqlite3.connect``; for PostgreSQL, a psycopg connection to the test's own schema
that takes the same ``?`` placeholders. The settings fixture registers which schema
belongs to which ``db_path``, so helpers that only know the path keep working.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

#: ``db_path`` of a test -> the PostgreSQL URL its store really is.
_POSTGRES: dict[Path, str] = {}

PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"


def register(path: Path, url: str) -> None:
    _POSTGRES[path] = url


def unregister(path: Path) -> None:
    _POSTGRES.pop(path, None)


def postgres_url(path: Path) -> str | None:
    return _POSTGRES.get(path)


class _Cursor:
    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def __iter__(self) -> Any:
        return iter(self.fetchall())


class _PostgresConnection:
    """The slice of sqlite3.Connection the tests use, on a PostgreSQL schema."""

    def __init__(self, url: str, dict_rows: bool) -> None:
        schema = url.rsplit("search_path=", 1)[-1]
        base = url.split("?", 1)[0]
        self._conn = psycopg.connect(
            base, options=f"-c search_path={schema}", row_factory=dict_row if dict_rows else None
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        return _Cursor(self._conn.execute(_percent(sql), tuple(params)))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_percent(sql), [tuple(r) for r in rows])

    def commit(self) -> None:
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


def _percent(sql: str) -> str:
    """``?`` -> ``%s`` (psycopg's style), outside quotes; a literal ``%`` is doubled."""
    out, quote = [], ""
    for char in sql.replace("%", "%%"):
        if quote:
            quote = "" if char == quote else quote
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)


@contextmanager
def connect(path: Path, *, timeout: float = 5.0, dict_rows: bool = False) -> Iterator[Any]:
    """A connection to the test's store, committed when the block ends."""
    url = _POSTGRES.get(path)
    if url is None:
        conn = sqlite3.connect(path, timeout=timeout)
        if dict_rows:
            conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()
        return
    pg = _PostgresConnection(url, dict_rows)
    try:
        yield pg
        pg.commit()
    finally:
        pg.close()


def sql(path: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Every row of a query, as tuples."""
    with connect(path) as conn:
        return [tuple(row) for row in conn.execute(query, params).fetchall()]
