"""A versioned schema: numbered migrations per component, the version kept in the store.

Each part of privacyops that owns tables (the runtime, the platform's data,
each worker) declares them as a ``Schema``: a component name and its numbered
``Migration``s, each with its DDL per SQL dialect. The store records what was
applied in ``schema_migrations`` (component, version, name, applied_at):

* ``privacyops db status`` shows, per component, the store's version and the code's;
* ``privacyops db migrate`` applies what is pending, each migration in its own
  transaction with its row in ``schema_migrations`` (a crash leaves it applied
  wholly or not at all);
* ``privacyops run`` refuses a store behind the code (or ahead of it, after a
  downgrade) with ``StoreOutOfDate`` and exit code 2, unless told ``--migrate``.

A store made before versions existed has no ``schema_migrations`` table: it is
at version 0 everywhere. Migration 1 of every component is that old schema,
written ``CREATE ... IF NOT EXISTS``, so migrating such a store records it
without changing what it holds, then applies the rest.

Components are independent: a new worker brings its own migrations numbered
from 1 and never renumbers anyone else's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from infra.store.base import Store
from messages.errors import StoreOutOfDate

VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (component, version)
)
"""
RECORD = "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)"
CURRENT = "SELECT component, max(version) FROM schema_migrations GROUP BY component"


@dataclass(frozen=True)
class Migration:
    """One step of a component's schema; ``sql`` maps a dialect to its script."""

    version: int
    name: str
    sql: Mapping[str, str]

    def script(self, dialect: str) -> str:
        try:
            return self.sql[dialect]
        except KeyError:
            raise StoreOutOfDate(
                f"migration {self.version} ({self.name}) has no {dialect} script"
            ) from None


@dataclass(frozen=True)
class Schema:
    """The tables a component owns, as the migrations that build them."""

    component: str
    migrations: tuple[Migration, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.component}: migrations must be numbered 1, 2, 3...")

    @property
    def target(self) -> int:
        return len(self.migrations)


@dataclass(frozen=True)
class ComponentState:
    component: str
    current: int
    target: int

    @property
    def state(self) -> str:
        if self.current == self.target:
            return "current"
        return "behind" if self.current < self.target else "ahead"


def unique(schemas: Iterable[Schema]) -> list[Schema]:
    """One entry per component, in first-seen order; two different ones are an error."""
    seen: dict[str, Schema] = {}
    for t in schemas:
        if t.component in seen and seen[t.component] != t:
            raise ValueError(f"two different schemas claim component {t.component!r}")
        seen.setdefault(t.component, t)
    return list(seen.values())


async def status(store: Store, schemas: Sequence[Schema]) -> list[ComponentState]:
    """Per component: the version the store is at and the one the code expects."""
    async with store.transaction() as tx:
        await tx.execute_script(VERSIONS_DDL)
        rows = await tx.fetchall(CURRENT)
    current = {str(component): int(version) for component, version in rows}
    return [ComponentState(t.component, current.get(t.component, 0), t.target) for t in schemas]


async def check(store: Store, schemas: Sequence[Schema]) -> None:
    """Raise ``StoreOutOfDate`` unless every component is at the code's version."""
    states = [s for s in await status(store, schemas) if s.state != "current"]
    if not states:
        return
    parts = ", ".join(f"{s.component} {s.current} (code {s.target})" for s in states)
    advice = (
        "run `privacyops db migrate` (or `privacyops run --migrate`)"
        if all(s.state == "behind" for s in states)
        else "the store was written by a newer privacyops; run that version"
    )
    raise StoreOutOfDate(f"store schema is not the code's: {parts}; {advice}")


Applied = Callable[[str, Migration], None]


async def migrate(
    store: Store, schemas: Sequence[Schema], on_applied: Applied | None = None
) -> list[tuple[str, Migration]]:
    """Apply every pending migration, each in its own transaction; refuse a store ahead.

    Each step reads the component's version again inside its own (write-locked)
    transaction, so two processes migrating one store at once apply each step once.
    """
    states = await status(store, schemas)
    if any(state.state == "ahead" for state in states):
        await check(store, schemas)  # raises, naming every component out of step
    applied: list[tuple[str, Migration]] = []
    for state, schema in zip(states, schemas, strict=True):
        for migration in schema.migrations[state.current :]:
            if await _apply(store, schema.component, migration):
                applied.append((schema.component, migration))
                if on_applied is not None:
                    on_applied(schema.component, migration)
    return applied


async def _apply(store: Store, component: str, migration: Migration) -> bool:
    async with store.transaction() as tx:
        row = await tx.fetchone(
            "SELECT max(version) FROM schema_migrations WHERE component = ?", (component,)
        )
        if row is not None and row[0] is not None and int(row[0]) >= migration.version:
            return False  # another process applied it meanwhile
        await tx.execute_script(migration.script(store.dialect))
        tx.stage(
            RECORD, (component, migration.version, migration.name, datetime.now(UTC).isoformat())
        )
    return True
