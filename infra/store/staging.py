"""Staged writes: what a transaction has queued, grouped so it can go in few round trips.

Both adapters keep a transaction's writes here and send them at flush or commit, one
``executemany`` per run of the same statement: a driver round trip per row would cap
a worker near 1,600 msg/s (about 0.1 ms of aiosqlite thread hand-off per call).

Writes to one table run in the order they were staged; writes to different tables
may run in any order, so a statement must not read another table that the same
transaction writes (none here does: no ``INSERT ... SELECT``, no triggers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from infra.store.base import Row, Transaction, WriteHook

_TARGET = re.compile(
    r"^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM)"
    r"\s+(\w+)",
    re.IGNORECASE,
)


def target(sql: str) -> str:
    """The table a write statement changes; unknown shapes share one ordered group."""
    match = _TARGET.match(sql)
    return match.group(1).lower() if match else "*"


class Staged:
    """The writes a transaction has queued and not yet sent."""

    def __init__(self) -> None:
        self._runs: dict[str, list[tuple[str, list[Row]]]] = {}

    def add(self, sql: str, params: Row) -> None:
        runs = self._runs.setdefault(target(sql), [])
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))

    def take(self, held: frozenset[str] = frozenset()) -> list[tuple[str, list[Row]]]:
        """Every run (statement, rows) in sending order but those of a ``held`` statement,
        which stay queued; the queue holds only those afterwards."""
        runs, self._runs = self._runs, {}
        taken = []
        for table, table_runs in runs.items():
            for sql, rows in table_runs:
                if sql in held:
                    self._runs.setdefault(table, []).append((sql, rows))
                else:
                    taken.append((sql, rows))
        return taken


class Hooks:
    """A store's write hooks (``WriteHook``), applied by its transactions' flushes.

    A flush in the middle of a transaction leaves the hooked statements' rows queued,
    unless the statement it flushes for names a hooked table; the last flush (commit,
    or an explicit ``flush()``) hands them to their hooks.
    """

    def __init__(self, hooks: Sequence[WriteHook] = ()) -> None:
        self._by_statement = {hook.statement: hook for hook in hooks}
        self.held = frozenset(self._by_statement)
        self._tables = tuple(hook.table for hook in hooks)

    def names_hooked_table(self, sql: str) -> bool:
        return any(table in sql for table in self._tables)

    async def take(
        self, staged: Staged, tx: Transaction, final: bool
    ) -> list[tuple[str, list[Row]]]:
        """The runs to send now, the hooked ones rewritten (only when ``final``)."""
        if not self._by_statement:
            return staged.take()
        if not final:
            return staged.take(self.held)
        out: list[tuple[str, list[Row]]] = []
        hooked: dict[str, list[Row]] = {}
        for sql, rows in staged.take():
            if sql in self.held:
                hooked.setdefault(sql, []).extend(rows)
            else:
                out.append((sql, rows))
        for sql, rows in hooked.items():  # one rewrite per hook: it reads the heads once
            out.extend(await self._by_statement[sql].rewrite(tx, rows))
        return out
