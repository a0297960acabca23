"""The PostgreSQL store (asyncpg): for several worker processes on several machines.

Chosen with ``PRIVACYOPS_STORE_URL=postgresql://user@host:5432/db`` (credentials in
the URL or the usual ``PG*`` environment; a ``?search_path=name`` query parameter
picks a schema). A pool of connections; every transaction takes one connection
for its length, so the runtime's batches, the outbox relays and the sweeps of one
process run side by side, and several processes share the database.

The SQL the runtime and the workers write is the portable subset described in
``infra/store/__init__.py``; the only translation here is the parameter style:
``?`` placeholders become ``$1, $2...``, once per distinct statement. Staged
writes go as one ``executemany`` per run of the same statement, pipelined by
asyncpg.

asyncpg errors stop here: a lost or refused connection, a deadlock, a
serialisation failure or a lock timeout become ``StoreUnavailable`` (retryable),
a constraint violation or any other refusal ``StoreRejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from infra.store.base import Row, WriteHook
from infra.store.staging import Hooks, Staged
from messages.errors import StoreRejected, StoreUnavailable

_RETRYABLE = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    # The client's protocol state after the server dropped the connection mid-statement
    # ("cannot switch to state ...; another operation is in progress"): that connection is
    # finished, another one will do.
    asyncpg.exceptions.InternalClientError,
)
_CONNECTION = (OSError, TimeoutError, ConnectionError)
#: Everything asyncpg or the socket may raise: translated, never passed on as it is.
_CLIENT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    *_CONNECTION,
)


def translate(exc: BaseException) -> StoreUnavailable | StoreRejected:
    """Map an asyncpg (or socket) error to the project's hierarchy; the text names no values."""
    if isinstance(exc, (*_RETRYABLE, *_CONNECTION)):
        return StoreUnavailable(f"store unavailable: {type(exc).__name__}")
    if isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError):
        return StoreRejected(
            "permission denied: the database role may not do this (least privilege: see the"
            " README's GRANT statements)"
        )
    if isinstance(exc, asyncpg.exceptions.IntegrityConstraintViolationError):
        return StoreRejected(f"constraint violated: {type(exc).__name__}")
    return StoreRejected(f"store refused the statement: {type(exc).__name__}")


@lru_cache(maxsize=4_096)
def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2...``; a ``?`` inside a quoted literal stays."""
    out, n, quote = [], 0, ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(char)
    return "".join(out)


def lock_id(key: str) -> int:
    """A key as the signed 64-bit number PostgreSQL's advisory locks take."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _rowcount(status: str) -> int:
    """The row count in a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction:
    """One open transaction on one pooled connection: staged writes, reads that see them."""

    def __init__(self, conn: asyncpg.Connection, hooks: Hooks | None = None) -> None:
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
            await _guard(self._conn.executemany(numbered(sql), rows))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        await self._send(final=self._hooks.names_hooked_table(sql))
        records = await _guard(self._conn.fetch(numbered(sql), *params))
        return [tuple(record) for record in records]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        await self._send(final=self._hooks.names_hooked_table(sql))
        status = await _guard(self._conn.execute(numbered(sql), *params))
        return _rowcount(str(status))

    async def columns(self, table: str) -> list[str]:
        """The column names of a table of this schema, in order; empty when it does not exist."""
        # the catalogue, not information_schema: ~0.5 ms instead of several (access reads
        # every table's live columns on every request, so an unclassified one is never missed)
        rows = await self.fetchall(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(?)::oid"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        return [str(name) for (name,) in rows]

    async def lock(self, *keys: str) -> None:
        """Transaction-scoped advisory locks, taken in ascending order (no deadlock)."""
        if not keys:
            return
        ids = sorted({lock_id(key) for key in keys})
        await self._send(final=False)
        await _guard(
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k", ids
            )
        )

    async def execute_script(self, script: str) -> None:
        """Several statements, no parameters: PostgreSQL runs them in this transaction."""
        await self.flush()
        await _guard(self._conn.execute(script))


async def _guard(awaitable: Any) -> Any:
    try:
        return await awaitable
    except _CLIENT_ERRORS as exc:
        raise translate(exc) from exc


class PostgresStore:
    """A PostgreSQL database (or one schema of it) holding privacyops' tables."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        hooks: Sequence[WriteHook] = (),
        command_timeout_s: float | None = None,
    ) -> None:
        self._url = url
        self._hooks = Hooks(hooks)
        self._pool_size = pool_size
        self._timeout = connect_timeout_s
        #: Longest wait for one statement (data sources: a bounded wait); None: unbounded.
        self._command_timeout = command_timeout_s
        self._pool: asyncpg.Pool | None = None

    def describe(self) -> str:
        """The URL without its password."""
        parts = urlsplit(self._url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, parts.query, ""))

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._command_timeout,
            )
        except _CLIENT_ERRORS as exc:
            raise translate(exc) from exc

    async def close(self) -> None:
        """Close the pool; connections still busy past the connect timeout are dropped."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()

    async def ping(self) -> bool:
        try:
            async with self.transaction() as tx:
                await tx.fetchone("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """BEGIN ... COMMIT on a pooled connection; rolled back if the block raises."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("store is not open")
        try:
            conn = await pool.acquire(timeout=self._timeout)
        except _CLIENT_ERRORS as exc:
            raise translate(exc) from exc
        try:
            tx = PostgresTransaction(conn, self._hooks)
            transaction = conn.transaction()
            try:
                await _guard(transaction.start())
                yield tx
                await tx.flush()
                await _guard(transaction.commit())
            except BaseException:
                rolled_back = False
                with contextlib.suppress(*_CLIENT_ERRORS, asyncio.CancelledError):
                    await transaction.rollback()
                    rolled_back = True
                if not rolled_back:
                    # Cancelled mid-statement or mid-BEGIN (shutdown, a handler timeout),
                    # or the rollback cancelled in turn: the connection is dropped, never
                    # handed back to the pool inside a transaction. A connection the
                    # server closed is already back with the pool (asyncpg detaches it):
                    # nothing to drop, and the error that brought us here stands.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                raise
        finally:
            with contextlib.suppress(*_CLIENT_ERRORS):
                await pool.release(conn)
