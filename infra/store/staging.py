"""Staged writes: what a transaction has queued, grouped so it can go in few round trips.

Both adapters keep a transaction's writes here and send them at flush or commit, one
``executemany`` per run of the same statement: a driver round trip per row would cap
a worker near 1,600 msg/s (RABBITMQ.md).

Writes to one table run in the order they were staged; writes to different tables
may run in any order, so a statement must not read another table that the same
transaction writes (none here does: no ``INSERT ... SELECT``, no triggers).
"""

from __future__ import annotations

import re

from infra.store.base import Row

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

    def take(self) -> list[tuple[str, list[Row]]]:
        """Every run (statement, rows) in sending order; the queue is empty afterwards."""
        runs, self._runs = self._runs, {}
        return [run for table_runs in runs.values() for run in table_runs]
