"""The PostgreSQL store on the machine's cluster, one schema per test."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from infra.store.postgres import PostgresStore, translate
from messages.errors import StoreUnavailable

pytestmark = pytest.mark.stores("postgresql")


async def test_a_connection_lost_mid_transaction_is_retryable_and_the_pool_recovers(
    store_url: str, postgres_admin_url: str
) -> None:
    # The server ends the session inside a transaction (PostgreSQL stopped or restarted,
    # an administrator's pg_terminate_backend). asyncpg hands the broken connection back
    # to its pool by itself; the store must still report StoreUnavailable (a retry), never
    # the InterfaceError of terminating a connection it no longer holds, which the runtime
    # took for a handler crash and dead-lettered the message.
    store = PostgresStore(store_url, pool_size=1, connect_timeout_s=5)
    await store.open()
    try:
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                async with store.transaction() as tx:
                    row = await tx.fetchone("SELECT pg_backend_pid()")
                    assert row is not None
                    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
                        admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    await tx.fetchone("SELECT 1")
        assert await store.ping()
    finally:
        await store.close()


@pytest.mark.parametrize(
    "raised",
    [
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        ConnectionResetError(104, "reset by peer"),
    ],
    ids=type,
)
def test_what_a_dropped_connection_leaves_in_the_client_is_retryable(raised: Exception) -> None:
    # Seen in the PostgreSQL-restart fault scenario: a rollback or BEGIN on a connection whose
    # protocol was still consuming the server's goodbye raised InternalClientError, which the
    # runtime took for a handler crash and dead-lettered.
    translated = translate(raised)
    assert isinstance(translated, StoreUnavailable)
    assert str(translated) == f"store unavailable: {type(raised).__name__}"
