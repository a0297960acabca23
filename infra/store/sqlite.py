"""The SQLite store (aiosqlite): the embedded default.

One connection per process; transactions are serialised by a lock, so the
runtime's batches and the outbox relay never share one by accident. Writes are
*staged* and sent with one ``executemany`` per statement at flush or commit:
aiosqlite costs a thread round trip per call (~0.1 ms), so per-row calls would
cap a worker near 1,600 msg/s (RABBITMQ.md). A read flushes what is staged, so
a read always sees earlier writes of the same transaction.

``sqlite3`` errors stop here: locked, busy or I/O errors become
``StoreUnavailable`` (retryable), constraint violations ``StoreRejected``.
Every table holding tenant data has ``tenant_id`` and every query names it.
Schema are created by the migrations (``infra/store/migrations.py``), never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from infra.store.base import Row
from infra.store.staging import Staged
from messages.errors import StoreRejected, StoreUnavailable

_RETRYABLE_CODES = ("locked", "busy", "disk i/o", "unable to open", "database is full")


def translate(exc: sqlite3.Error) -> StoreUnavailable | StoreRejected:
    """Map a sqlite3 error to the project's hierarchy; the text names no values."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreRejected(f"constraint violated: {type(exc).__name__}")
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(c in text for c in _RETRYABLE_CODES):
        return StoreUnavailable(f"store unavailable: {text[:80]}")
    return StoreRejected(f"store refused the statement: {type(exc).__name__}")


class SqliteTransaction:
    """One open transaction: staged writes plus reads that see them."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._staged = Staged()

    def stage(self, sql: str, params: Row) -> None:
        """Queue a write (``infra/store/staging.py`` says in what order it runs)."""
        self._staged.add(sql, params)

    def stage_all(self, writes: Iterable[tuple[str, Row]]) -> None:
        for sql, params in writes:
            self.stage(sql, params)

    async def flush(self) -> None:
        for sql, rows in self._staged.take():
            await self._guard(self._conn.executemany(sql, rows))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        await self.flush()
        cursor = await self._guard(self._conn.execute(sql, params))
        rows = await self._guard(cursor.fetchall())
        await cursor.close()
        return [tuple(r) for r in rows]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write now; return the number of rows it changed."""
        await self.flush()
        cursor = await self._guard(self._conn.execute(sql, params))
        count: int = cursor.rowcount
        await cursor.close()
        return count

    async def columns(self, table: str) -> list[str]:
        """The column names of a table, in order; empty when it does not exist."""
        rows = await self.fetchall("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))
        return [str(name) for (name,) in rows]

    async def execute_script(self, script: str) -> None:
        """Each statement of ``script`` in turn, inside this transaction.

        ``executescript`` would commit first; statements are split where SQLite says
        one is complete, so a ``;`` inside a string literal does not split.
        """
        await self.flush()
        for statement in split_statements(script):
            await self._guard(self._conn.execute(statement))

    async def lock(self, *keys: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` holds the whole database for this transaction."""

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        try:
            return await awaitable
        except sqlite3.Error as exc:
            raise translate(exc) from exc


def split_statements(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip().strip(";").strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


class SqliteStore:
    """The embedded default store: one SQLite file in WAL mode."""

    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_ms: int = 5_000, synchronous: str = "full") -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        # FULL: a commit is on disk before the messages it covers are acknowledged, so a
        # power loss cannot lose them. NORMAL (WAL): survives a crash of the process, not
        # of the machine; faster (no fsync per commit).
        self._synchronous = "NORMAL" if synchronous == "normal" else "FULL"
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await self._conn.execute("PRAGMA journal_mode = WAL")
            await self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            await self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def ping(self) -> bool:
        try:
            async with self.transaction() as tx:
                await tx.fetchone("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back if the block raises."""
        if self._conn is None:
            raise StoreUnavailable("store is not open")
        conn = self._conn
        async with self._lock:
            tx = SqliteTransaction(conn)
            await SqliteTransaction._guard(conn.execute("BEGIN IMMEDIATE"))
            try:
                yield tx
                await tx.flush()
                await SqliteTransaction._guard(conn.execute("COMMIT"))
            except BaseException:
                await _rollback(conn)
                raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    # The transaction is gone either way; the original error is what matters.
    with contextlib.suppress(sqlite3.Error):
        await conn.execute("ROLLBACK")
