"""Data sources: the databases where the platform's personal data lives.

The rights act on the data where it is (POPIA s23, s24; GDPR art 15-17, 20): a
collection platform keeps its debtors in its own database, not in privacyops'
store. Each table of the data map names its source (``data_source``); the
sources themselves are configured by name in the environment
(``PRIVACYOPS_SOURCES``), so credentials never sit in the map:

* ``embedded``: privacyops' own store (SQLite by default, or the PostgreSQL store),
  always present, the default of every table;
* any other name: a ``postgresql://`` URL (asyncpg, a small pool, every statement
  bounded by ``source_timeout_s``) or a ``sqlite:///path`` file.

A source is opened on first use, not at start: a platform database that is down
does not stop privacyops, it only makes the steps that need it wait. Errors are
the store adapters' (``infra/store``): an unreachable source is ``StoreUnavailable``
(retryable), a refused statement (permission denied: a read-only role asked to
erase) ``StoreRejected`` (permanent) with the reason.

Reading the embedded source *within* a transaction already open on the store (a
batch's) uses that transaction: a second one on SQLite would wait for the first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from config.datamap import EMBEDDED
from config.settings import Settings
from infra.store import PostgresStore, SqliteStore, Store, Transaction
from messages.errors import PrivacyOpsError, StoreRejected

log = structlog.get_logger("privacyops.sources")


def build_source(settings: Settings, url: str) -> Store:
    """The store adapter a source URL names; not yet opened."""
    if url.startswith("sqlite:///"):
        return SqliteStore(
            Path(url.removeprefix("sqlite:///")),
            settings.db_busy_timeout_ms,
            settings.db_synchronous,
        )
    return PostgresStore(
        url,
        pool_size=settings.source_pool_size,
        connect_timeout_s=settings.connect_timeout_s,
        command_timeout_s=settings.source_timeout_s,
    )


class Sources:
    """The configured sources by name; ``embedded`` is the store privacyops runs on."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._store = store
        self._urls = {name: url.get_secret_value() for name, url in settings.sources.items()}
        self._settings = settings
        self._opened: dict[str, Store] = {}
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return [EMBEDDED, *sorted(self._urls)]

    def kind(self, name: str) -> str:
        """``sqlite`` or ``postgresql``: the dialect of the source's SQL."""
        if name == EMBEDDED:
            return self._store.dialect
        return "sqlite" if self._url(name).startswith("sqlite:") else "postgresql"

    def describe(self, name: str) -> str:
        """Where the source is, without credentials (for ``datamap check``)."""
        if name == EMBEDDED:
            return self._store.describe()
        return build_source(self._settings, self._url(name)).describe()

    def _url(self, name: str) -> str:
        try:
            return self._urls[name]
        except KeyError:
            raise StoreRejected(
                f"the data map names the source {name!r}, which PRIVACYOPS_SOURCES does not"
            ) from None

    async def store(self, name: str) -> Store:
        """The source's store, opened on first use (bounded by the connect timeout)."""
        if name == EMBEDDED:
            return self._store
        if name in self._opened:
            return self._opened[name]
        async with self._lock:
            if name not in self._opened:
                source = build_source(self._settings, self._url(name))
                await source.open()
                self._opened[name] = source
                log.info("source_opened", source=name, at=source.describe())
        return self._opened[name]

    @asynccontextmanager
    async def transaction(
        self, name: str, *, within: Transaction | None = None
    ) -> AsyncIterator[Transaction]:
        """A transaction on the source, committed when the block ends.

        ``within``: a transaction already open on the embedded store, used as is when
        ``name`` is the embedded source (its commit is the caller's).
        """
        if name == EMBEDDED and within is not None:
            yield within
            return
        source = await self.store(name)
        async with source.transaction() as tx:
            yield tx

    async def ping(self, name: str) -> bool:
        try:
            return await (await self.store(name)).ping()
        except PrivacyOpsError:
            return False

    async def close(self) -> None:
        """Close every source opened here (never the embedded store: its owner closes it)."""
        opened, self._opened = self._opened, {}
        for name, source in reversed(list(opened.items())):
            with contextlib.suppress(PrivacyOpsError):
                await source.close()
            log.info("source_closed", source=name)
