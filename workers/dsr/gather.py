"""Gathering everything the data map finds for one subject (POPIA s23; GDPR art 15, 20).

One query per mapped table, each scoped by tenant and subject, plus the
notes and marks the rights themselves leave: corrections requested but not
made (POPIA s24: always returned with the data), restrictions and objections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.datamap import DataMap
from infra.store import Transaction

Rows = list[dict[str, Any]]


@dataclass
class SubjectData:
    tenant_id: str
    subject_ref: str
    tables: dict[str, Rows] = field(default_factory=dict)
    correction_notes: Rows = field(default_factory=list)
    restrictions: Rows = field(default_factory=list)
    objections: Rows = field(default_factory=list)

    @property
    def holds_anything(self) -> bool:
        return any(self.tables.values())


async def _select(tx: Transaction, sql: str, params: tuple[Any, ...], columns: list[str]) -> Rows:
    return [dict(zip(columns, row, strict=True)) for row in await tx.fetchall(sql, params)]


async def gather(
    tx: Transaction, datamap: DataMap, tenant_id: str, subject_ref: str, *, provided_only: bool
) -> SubjectData:
    """Everything held on the subject; ``provided_only`` limits it to portable data."""
    data = SubjectData(tenant_id, subject_ref)
    for name, table in datamap.tables.items():
        if provided_only and not table.provided_by_subject:
            continue
        columns = list(table.columns)
        data.tables[name] = await _select(
            tx,
            f"SELECT {', '.join(columns)} FROM {name}"
            f" WHERE tenant_id = ? AND {table.subject_column} = ?",
            (tenant_id, subject_ref),
            columns,
        )
    key = (tenant_id, subject_ref)
    data.correction_notes = await _select(
        tx,
        "SELECT field, requested_value, reason, request_id, created_at FROM dsr_correction_notes"
        " WHERE tenant_id = ? AND subject_ref = ? ORDER BY id",
        key,
        ["field", "requested_value", "reason", "request_id", "created_at"],
    )
    data.restrictions = await _select(
        tx,
        "SELECT scope, origin, basis, since, until FROM restrictions"
        " WHERE tenant_id = ? AND subject_ref = ?",
        key,
        ["scope", "origin", "basis", "since", "until"],
    )
    data.objections = await _select(
        tx,
        "SELECT purpose, outcome, recorded_at FROM processing_flags"
        " WHERE tenant_id = ? AND subject_ref = ?",
        key,
        ["purpose", "outcome", "recorded_at"],
    )
    return data
