"""The SQLite store (aiosqlite): the embedded default.

One connection per process; transactions are serialised by a lock, so the
runtime's batches and the outbox relay never share one by accident. Writes are
*staged* and sent with one ``executemany`` per statement at flush or commit:
aiosqlite costs a thread round trip per call (~0.1 ms), so per-row calls would
cap a worker near 1,600 msg/s. A read flushes what is staged, so
a read always sees earlier writes of the same transaction.

``sqlite3`` (and ``sqlcipher3``) errors stop here: locked, busy or I/O errors become
``StoreUnavailable`` (retryable), constraint violations ``StoreRejected``.

Encryption at rest: with a key the file is opened through SQLCipher
(``sqlcipher3``, the same DB-API as ``sqlite3``, wrapped by aiosqlite): every
page of the database and of its WAL is AES-256 encrypted with an HMAC per page,
so personal data, indexes and free pages never touch the disk in clear. The key
is raw (32 bytes, ``PRAGMA key = "x'..'"``), so SQLCipher skips its PBKDF2 step.
``encrypt_copy`` turns a plain store into an encrypted one (``privacyops db
encrypt``) and ``rekey`` changes the key (``privacyops db rekey``).

Files: the directory is created 0700 and the database 0600 before SQLite opens
it; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
Every table holding tenant data has ``tenant_id`` and every query names it.
Schema are created by the migrations (``infra/store/migrations.py``), never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import sqlcipher3  # type: ignore[import-untyped]

from config.secrets import FILE_MODE, private_dir
from infra.store.base import Row, WriteHook
from infra.store.staging import Hooks, Staged
from messages.errors import StoreRejected, StoreUnavailable

_RETRYABLE_CODES = ("locked", "busy", "disk i/o", "unable to open", "database is full")

#: The two drivers' error bases: sqlcipher3 is a fork with its own exception classes.
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, sqlcipher3.dbapi2.Error)
_INTEGRITY = (sqlite3.IntegrityError, sqlcipher3.dbapi2.IntegrityError)
_OPERATIONAL = (sqlite3.OperationalError, sqlcipher3.dbapi2.OperationalError)


def translate(exc: Exception) -> StoreUnavailable | StoreRejected:
    """Map a sqlite3 error to the project's hierarchy; the text names no values."""
    if isinstance(exc, _INTEGRITY):
        return StoreRejected(f"constraint violated: {type(exc).__name__}")
    text = str(exc).lower()
    if isinstance(exc, _OPERATIONAL) and any(c in text for c in _RETRYABLE_CODES):
        return StoreUnavailable(f"store unavailable: {text[:80]}")
    if "file is not a database" in text:
        return StoreRejected(
            "store cannot be read: wrong key, or a plain store opened with encryption "
            "(privacyops db encrypt)"
        )
    return StoreRejected(f"store refused the statement: {type(exc).__name__}")


class SqliteTransaction:
    """One open transaction: staged writes plus reads that see them."""

    def __init__(self, conn: aiosqlite.Connection, hooks: Hooks | None = None) -> None:
        self._conn = conn
        self._staged = Staged()
        self._hooks = hooks or Hooks()

    def stage(self, sql: str, params: Row) -> None:
        """Queue a write (``infra/store/staging.py`` says in what order it runs)."""
        self._staged.add(sql, params)

    def stage_all(self, writes: Iterable[tuple[str, Row]]) -> None:
        for sql, params in writes:
            self.stage(sql, params)

    async def flush(self) -> None:
        await self._send(final=True)

    async def _send(self, final: bool) -> None:
        """The staged writes; hooked ones (the audit chain) only when ``final``."""
        for sql, rows in await self._hooks.take(self._staged, self, final):
            await self._guard(self._conn.executemany(sql, rows))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        await self._send(final=self._hooks.names_hooked_table(sql))
        cursor = await self._guard(self._conn.execute(sql, params))
        rows = await self._guard(cursor.fetchall())
        await cursor.close()
        return [tuple(r) for r in rows]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write now; return the number of rows it changed."""
        await self._send(final=self._hooks.names_hooked_table(sql))
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
        except DB_ERRORS as exc:
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

    def __init__(
        self,
        path: Path,
        busy_timeout_ms: int = 5_000,
        synchronous: str = "full",
        key: bytes | None = None,
        hooks: Sequence[WriteHook] = (),
    ) -> None:
        self.path = path
        self._hooks = Hooks(hooks)
        self._key = key
        self._busy_timeout_ms = busy_timeout_ms
        # FULL: a commit is on disk before the messages it covers are acknowledged, so a
        # power loss cannot lose them. NORMAL (WAL): survives a crash of the process, not
        # of the machine; faster (no fsync per commit).
        self._synchronous = "NORMAL" if synchronous == "normal" else "FULL"
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return str(self.path)

    @property
    def encrypted(self) -> bool:
        return self._key is not None

    async def open(self) -> None:
        prepare_file(self.path)
        try:
            conn = await aiosqlite.Connection(
                lambda: connect_file(self.path, self._key, check=False), iter_chunk_size=64
            )
        except DB_ERRORS as exc:
            raise translate(exc) from exc
        try:
            # A wrong key fails at the first read, here rather than inside the connector:
            # close() then waits for the connection's thread to stop, so no thread is left
            # to report to an event loop that has gone.
            await conn.execute("SELECT count(*) FROM sqlite_master")
            await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, DB_ERRORS):
                raise translate(exc) from exc
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def ping(self) -> bool:
        """``SELECT 1`` on the connection, outside any transaction: a health probe never
        waits for (or takes) the write lock that the batches hold."""
        if self._conn is None:
            return False
        try:
            cursor = await self._conn.execute("SELECT 1")
            await cursor.close()
        except DB_ERRORS:
            return False
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back if the block raises."""
        if self._conn is None:
            raise StoreUnavailable("store is not open")
        conn = self._conn
        async with self._lock:
            tx = SqliteTransaction(conn, self._hooks)
            try:
                # Inside the try: cancelled while BEGIN is on its way, the BEGIN still runs
                # on aiosqlite's thread, and the rollback queued after it undoes it.
                await SqliteTransaction._guard(conn.execute("BEGIN IMMEDIATE"))
                yield tx
                await tx.flush()
                await SqliteTransaction._guard(conn.execute("COMMIT"))
            except BaseException:
                await _rollback(conn)
                raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    # The transaction is gone either way; the original error is what matters.
    with contextlib.suppress(*DB_ERRORS):
        await conn.execute("ROLLBACK")


def prepare_file(path: Path) -> None:
    """The directory 0700 (when created here) and the database file 0600 before SQLite
    opens it; an existing file others may read is narrowed to 0600."""
    private_dir(path.parent)
    try:
        if not path.exists():
            # O_EXCL, and only for a new file: opening and closing an existing database
            # would drop the POSIX locks this process holds on it through SQLite.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if name.exists() and name.stat().st_mode & 0o077:
                name.chmod(FILE_MODE)
    except OSError as exc:
        raise StoreUnavailable(f"store file cannot be created: {type(exc).__name__}") from exc


def connect_file(path: Path, key: bytes | None, *, check: bool = True) -> Any:
    """A DB-API connection: sqlite3 for a plain store, sqlcipher3 with the key set first.
    With ``check``, a wrong key fails here, with a clear message, rather than at the first
    query (and the connection is closed)."""
    if key is None:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        if check:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def encrypt_copy(plain: Path, encrypted: Path, key: bytes) -> None:
    """Write an encrypted copy of a plain store (sqlcipher_export), for ``db encrypt``."""
    prepare_file(encrypted)
    conn = sqlcipher3.connect(str(plain), isolation_level=None)
    try:
        conn.execute(f"ATTACH DATABASE ? AS encrypted KEY \"x'{key.hex()}'\"", (str(encrypted),))
        conn.execute("SELECT sqlcipher_export('encrypted')")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA encrypted.user_version = {int(version)}")
        conn.execute("DETACH DATABASE encrypted")
    finally:
        conn.close()


def rekey(path: Path, old: bytes, new: bytes) -> None:
    """Re-encrypt the store under a new key (``PRAGMA rekey``), for ``db rekey``."""
    conn = connect_file(path, old)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA rekey = \"x'{new.hex()}'\"")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
