"""Gathering everything held about one subject (POPIA s23; GDPR art 15, 20).

One query per mapped table, each scoped by tenant and subject. Every column is
read: a column the data map does not classify is still the subject's data and
is returned apart (``unclassified``), never dropped. Beside the tables: what the
rights themselves leave (corrections requested but not made, always returned
with the data, POPIA s24; restrictions; objections), the subject's own request
history, and the security incidents that involved them.

Every data source is read (``infra/sources.py``): each source's tables in one
transaction of that source; the embedded store's within the caller's. A source
that does not answer fails the whole gathering (``StoreUnavailable``): an
answer that silently left out a database would not be the subject's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from config.datamap import DataMap
from infra.sources import Sources
from infra.store import Transaction

Rows = list[dict[str, Any]]


@dataclass
class SubjectData:
    tenant_id: str
    subject_ref: str
    tables: dict[str, Rows] = field(default_factory=dict)
    #: Per table, the values of columns the data map does not classify (row by row).
    unclassified: dict[str, Rows] = field(default_factory=dict)
    correction_notes: Rows = field(default_factory=list)
    restrictions: Rows = field(default_factory=list)
    objections: Rows = field(default_factory=list)
    requests: Rows = field(default_factory=list)
    incidents: Rows = field(default_factory=list)

    @property
    def holds_anything(self) -> bool:
        return any(self.tables.values())


async def _select(tx: Transaction, sql: str, params: tuple[Any, ...], columns: list[str]) -> Rows:
    return [dict(zip(columns, row, strict=True)) for row in await tx.fetchall(sql, params)]


async def gather(
    sources: Sources,
    tx: Transaction,
    datamap: DataMap,
    tenant_id: str,
    subject_ref: str,
    *,
    provided_only: bool,
) -> SubjectData:
    """Everything held on the subject; ``provided_only`` limits it to portable data.

    ``tx``: a transaction on privacyops' store (the marks, and the embedded source).
    """
    data = SubjectData(tenant_id, subject_ref)
    key = (tenant_id, subject_ref)
    for source in datamap.sources():
        names = [
            n
            for n in datamap.tables_of(source)
            if not provided_only or datamap.tables[n].provided_by_subject
        ]
        if not names:
            continue
        async with sources.transaction(source, within=tx) as source_tx:
            for name in names:
                await _table(source_tx, datamap, data, name, key)
    if provided_only:
        return data
    await _marks(tx, data, key)
    return data


async def _table(
    tx: Transaction, datamap: DataMap, data: SubjectData, name: str, key: tuple[str, str]
) -> None:
    """One table's rows of the subject; columns the map does not classify kept apart."""
    table = datamap.tables[name]
    mapped = list(table.columns)
    extra = [c for c in await tx.columns(name) if c not in mapped and c != "tenant_id"]
    rows = await _select(
        tx,
        f"SELECT {', '.join(mapped + extra)} FROM {name}"
        f" WHERE tenant_id = ? AND {table.subject_column} = ?",
        key,
        mapped + extra,
    )
    data.tables[name] = [{c: _plain(row[c]) for c in mapped} for row in rows]
    if extra:
        data.unclassified[name] = [{c: _plain(row[c]) for c in extra} for row in rows]


def _plain(value: Any) -> Any:
    """A value as JSON and CSV write it: PostgreSQL's dates and times as ISO text."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


async def _marks(tx: Transaction, data: SubjectData, key: tuple[str, str]) -> None:
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
        "SELECT purpose, outcome, objected_at, recorded_at FROM processing_flags"
        " WHERE tenant_id = ? AND subject_ref = ?",
        key,
        ["purpose", "outcome", "objected_at", "recorded_at"],
    )
    data.requests = await _select(
        tx,
        "SELECT request_id, kind, regime, status, received_at, due_on, extended, outcome"
        " FROM dsr_requests WHERE tenant_id = ? AND subject_ref = ? ORDER BY received_at",
        key,
        ["request_id", "kind", "regime", "status", "received_at", "due_on", "extended", "outcome"],
    )
    # The incident's own facts only: never an alert's free text or the unauthorised
    # party's identity, which may be other people's personal information.
    data.incidents = await _select(
        tx,
        "SELECT i.incident_id, i.category, i.status, i.data_categories, i.compromise,"
        " i.first_detected_at, s.told_at FROM security_incident_subjects s"
        " JOIN security_incidents i ON i.tenant_id = s.tenant_id"
        " AND i.incident_id = s.incident_id WHERE s.tenant_id = ? AND s.subject_ref = ?"
        " ORDER BY i.first_detected_at",
        key,
        [
            "incident_id",
            "category",
            "status",
            "data_categories",
            "compromise",
            "first_detected_at",
            "told_at",
        ],
    )
