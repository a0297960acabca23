"""The store: one interface for the runtime and the workers, one adapter per database.

Workers and the runtime talk to a ``Store`` and its ``Transaction``s, never to
a database driver, and they write portable SQL:

* parameters are ``?`` placeholders (DB-API ``qmark``): the SQLite adapter
  passes them through, an adapter for a driver with another style rewrites
  them once per distinct statement;
* upserts are ``INSERT ... ON CONFLICT (...) DO UPDATE/DO NOTHING`` (SQLite
  and PostgreSQL agree on it), never ``INSERT OR REPLACE/IGNORE``;
* no ``rowid``, no ``WITHOUT ROWID``, no ``BEGIN IMMEDIATE``: table layout and
  locking belong to the adapter and to each dialect's migrations
  (``infra/store/migrations.py``), which are the only place DDL is written.

Writes are *staged* and sent together (``stage``); reads see what the same
transaction staged before them. Errors of the driver never pass this package:
they become ``StoreUnavailable`` (retryable) or ``StoreRejected`` (permanent).

``open_store`` is the one place a store is built from the settings.
"""

from __future__ import annotations

from config.settings import Settings
from infra.audit.chain import AuditChain
from infra.keys import store_key
from infra.store.base import Row, Store, Transaction
from infra.store.postgres import PostgresStore
from infra.store.sqlite import SqliteStore

__all__ = ["PostgresStore", "Row", "SqliteStore", "Store", "Transaction", "open_store"]


def open_store(settings: Settings) -> Store:
    """The store the settings name; not yet opened. The only place a store is built.

    PostgreSQL when ``store_url`` is set; else the SQLite file at ``db_path``, encrypted
    with SQLCipher unless ``db_encryption = "none"`` (infra/store/sqlite.py), the key from
    ``db_key`` or the 0600 file ``<key_dir>/store.key``. Either way every audit row is
    linked into its tenant's hash chain as it is written (``infra/audit/chain.py``).
    """
    if settings.store_url is not None:
        return PostgresStore(
            settings.store_url.get_secret_value(),
            pool_size=settings.db_pool_size,
            connect_timeout_s=settings.connect_timeout_s,
            hooks=(AuditChain(),),
        )
    return SqliteStore(
        settings.db_path,
        settings.db_busy_timeout_ms,
        settings.db_synchronous,
        key=store_key(settings),
        hooks=(AuditChain(),),
    )
