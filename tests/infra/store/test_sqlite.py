"""The SQLite store: transactions, staging, error translation."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from infra.store.sqlite import SqliteStore, translate
from messages.errors import StoreRejected, StoreUnavailable

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS t (tenant_id TEXT NOT NULL, k TEXT NOT NULL, v INTEGER, "
    "PRIMARY KEY (tenant_id, k))"
)


@pytest.fixture
async def store(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    async with store.transaction() as tx:
        await tx.execute_script(SCHEMA)
    yield store
    await store.close()


async def test_staged_writes_commit_together_and_reads_see_them(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        tx.stage("INSERT INTO t VALUES (?, ?, ?)", ("acme", "a", 1))
        tx.stage("INSERT INTO t VALUES (?, ?, ?)", ("acme", "b", 2))
        assert await tx.fetchall("SELECT k FROM t WHERE tenant_id = ? ORDER BY k", ("acme",)) == [
            ("a",),
            ("b",),
        ]
    async with store.transaction() as tx:
        assert await tx.fetchone("SELECT count(*) FROM t WHERE tenant_id = ?", ("acme",)) == (2,)


async def test_a_failing_block_rolls_back(store: SqliteStore) -> None:
    with pytest.raises(StoreRejected):
        async with store.transaction() as tx:
            tx.stage("INSERT INTO t VALUES (?, ?, ?)", ("acme", "a", 1))
            tx.stage("INSERT INTO t VALUES (?, ?, ?)", ("acme", "a", 2))  # duplicate key
    async with store.transaction() as tx:
        assert await tx.fetchone("SELECT count(*) FROM t WHERE tenant_id = ?", ("acme",)) == (0,)


async def test_locked_database_is_retryable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", busy_timeout_ms=50)
    await store.open()
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            async with store.transaction():
                pass
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await store.close()


def test_translation_names_no_values() -> None:
    error = translate(sqlite3.IntegrityError("UNIQUE constraint failed: t.k 'jane@example.com'"))
    assert isinstance(error, StoreRejected)
    assert "jane" not in str(error)
    assert isinstance(translate(sqlite3.OperationalError("database is locked")), StoreUnavailable)


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    with pytest.raises(StoreUnavailable):
        async with store.transaction():
            pass


async def test_writes_to_one_table_keep_their_order(store: SqliteStore) -> None:
    """An update staged after an insert of the same row must see it (statement order)."""
    update = "UPDATE t SET v = ? WHERE tenant_id = ? AND k = ?"
    insert = "INSERT INTO t VALUES (?, ?, ?)"
    async with store.transaction() as tx:
        tx.stage(insert, ("acme", "a", 1))
    async with store.transaction() as tx:
        tx.stage(update, (10, "acme", "a"))  # the UPDATE is used first ...
        tx.stage(insert, ("acme", "b", 2))  # ... then a row is inserted ...
        tx.stage(update, (20, "acme", "b"))  # ... and updated: must run after the insert
    async with store.transaction() as tx:
        rows = await tx.fetchall("SELECT k, v FROM t WHERE tenant_id = ? ORDER BY k", ("acme",))
    assert rows == [("a", 10), ("b", 20)]


def test_a_failed_open_leaves_no_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store opened with the wrong key is closed before ``open`` raises: its connection
    thread must not outlive the event loop and then fail in the thread (it did, about one
    open in twenty, when the loop closed right after the refusal)."""
    path = tmp_path / "s.db"
    asyncio.run(_open_and_close(SqliteStore(path, key=b"k" * 32)))
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    for _ in range(200):
        loop = asyncio.new_event_loop()
        with pytest.raises(StoreRejected, match="wrong key"):
            loop.run_until_complete(SqliteStore(path, key=b"x" * 32).open())
        loop.close()
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(5)
    assert seen == []


async def _open_and_close(store: SqliteStore) -> None:
    await store.open()
    await store.close()


async def test_a_transaction_cancelled_at_begin_leaves_the_store_usable(store: SqliteStore) -> None:
    """Cancelled while its BEGIN is on the way (an outbox relay stopped at shutdown): the
    BEGIN still runs on aiosqlite's thread, so it is rolled back and the next one starts."""

    async def enter() -> None:
        async with store.transaction():
            await asyncio.sleep(10)

    task = asyncio.create_task(enter())
    await asyncio.sleep(0)  # the task has queued its BEGIN and waits for it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with store.transaction() as tx:
        assert await tx.fetchone("SELECT 1") == (1,)
