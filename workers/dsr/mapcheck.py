"""``privacyops datamap check``: the data map against each live data source (issue 13).

The rights read the map, not a list in code (docs/rules.md "Data-subject
requests"): a table the map names but a source lacks fails every request, a column
the map does not classify is missed by erasure, and a personal column in a table
the map does not name is never found by access or erasure at all (POPIA s23,
s24; GDPR art 15, 17). So, per source:

* every mapped table exists, has ``tenant_id`` (every query is scoped by tenant)
  and its subject column, and every column the map names;
* every live column of a mapped table is classified (except ``tenant_id``);
* in the tables the map does not name, columns whose names look personal
  (``first_name``, ``email``, ``id_number``...) are reported. The embedded store
  is not scanned for those: its other tables are privacyops' own, reduced by the
  erasure itself (``workers.dsr.forget``).

Only names and counts are reported, never values. An unreachable source is a problem.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from config.datamap import EMBEDDED, DataMap
from infra.sources import Sources
from infra.store import Transaction
from messages.errors import PrivacyOpsError

#: Column names that suggest personal information (POPIA s1 "personal information").
PERSONAL = re.compile(
    r"(^|_)(first_?name|last_?name|surname|full_?name|name|email|e_mail|phone|mobile|cell"
    r"|msisdn|address|street|postal|postcode|city|id_?number|id_no|identity|passport|birth"
    r"|dob|gender|race|salary|income|employer|bank|iban|account_?number|ip|location|note"
    r"|notes|comment|body)($|_)"
)
LIST_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    "postgresql": "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
}


@dataclass(frozen=True)
class Problem:
    source: str
    table: str
    column: str | None
    problem: str


async def check(sources: Sources, datamap: DataMap) -> list[Problem]:
    """Every problem found, source by source; empty when the map fits every source."""
    found: list[Problem] = []
    for source in datamap.sources():
        try:
            async with sources.transaction(source) as tx:
                found += await _source(tx, source, sources.kind(source), datamap)
        except PrivacyOpsError as exc:
            found.append(Problem(source, "*", None, f"source not usable: {exc.code}: {exc}"))
    return found


async def _source(tx: Transaction, source: str, kind: str, datamap: DataMap) -> list[Problem]:
    found: list[Problem] = []
    for name in datamap.tables_of(source):
        found += await _mapped(tx, source, name, datamap)
    if source == EMBEDDED:
        return found
    mapped = set(datamap.tables_of(source))
    for (table,) in await tx.fetchall(LIST_TABLES[kind]):
        if str(table) in mapped:
            continue
        for column in await tx.columns(str(table)):
            if PERSONAL.search(column.lower()):
                found.append(
                    Problem(source, str(table), column, "looks personal; the table is not mapped")
                )
    return found


async def _mapped(tx: Transaction, source: str, name: str, datamap: DataMap) -> list[Problem]:
    table = datamap.tables[name]
    live = await tx.columns(name)
    if not live:
        return [Problem(source, name, None, "table is in the data map but not in the source")]
    found = [
        Problem(source, name, column, "column is in the data map but not in the source")
        for column in [*table.columns, "tenant_id", table.subject_column]
        if column not in live
    ]
    found += [
        Problem(source, name, column, "column is not classified in the data map")
        for column in live
        if column != "tenant_id" and column not in table.columns
    ]
    return list(dict.fromkeys(found))


def as_json(problems: list[Problem], sources: list[str]) -> dict[str, object]:
    return {
        "ok": not problems,
        "sources": sources,
        "problems": [asdict(p) for p in problems],
    }
