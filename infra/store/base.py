"""The Store and Transaction protocols (see ``infra/store/__init__.py`` for the rules)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = tuple[Any, ...]


class Transaction(Protocol):
    """One open transaction: staged writes plus reads that see them."""

    def stage(self, sql: str, params: Row) -> None:
        """Queue a write; writes to one table run in the order staged."""

    def stage_all(self, writes: Iterable[tuple[str, Row]]) -> None: ...

    async def flush(self) -> None:
        """Send the staged writes now."""

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write now; the number of rows it changed."""

    async def columns(self, table: str) -> list[str]:
        """The column names of a table (the data map is checked against them)."""

    async def execute_script(self, script: str) -> None:
        """Run several statements (a migration) inside this transaction."""

    async def lock(self, *keys: str) -> None:
        """Hold an exclusive lock on each key until this transaction ends.

        What several processes sharing the store must not do at the same time
        (two deliveries of one message, two alerts of one fingerprint, one consent
        channel, one request) takes its key's lock before reading what it decides on.
        The keys are locked in a fixed order, so two transactions never deadlock on
        them. SQLite's ``BEGIN IMMEDIATE`` already locks the whole database: a no-op.
        """


class WriteHook(Protocol):
    """Takes over the staged rows of one statement at the transaction's last flush.

    The audit chain (``infra/audit/chain.py``) is one: its rows are held back until
    the commit (or a read of ``table``), then replaced by what ``rewrite`` returns,
    which may read and lock through the transaction first.
    """

    #: The staged statement it takes over (matched exactly).
    statement: str
    #: The table that statement writes: a read naming it sends the held rows first.
    table: str

    async def rewrite(self, tx: Transaction, rows: list[Row]) -> list[tuple[str, list[Row]]]:
        """The writes to send instead of ``rows``."""
        ...


class Store(Protocol):
    """A database holding the runtime's and the workers' tables."""

    #: The SQL dialect of the migrations this store runs (``sqlite``, ``postgresql``).
    dialect: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers a trivial query."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Commit when the block ends, roll back if it raises."""

    def describe(self) -> str:
        """Where the store is, for logs (no credentials)."""
