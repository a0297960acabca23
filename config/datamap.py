"""The data map and the retention holds, loaded from TOML (data, not code).

``config/datamap.toml`` describes every table of personal data;
``config/retention.toml`` the retention duties of docs/rules.md "Erasure and
retention holds". Both are
validated here once at start-up; a bad file fails loudly with the field named.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).resolve().parent
#: Every name the map gives is interpolated into SQL (table, column, row key): each must be
#: a plain lower-case identifier, so a crafted name cannot widen a statement (issue 11, E15).
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: privacyops' own tables (the runtime's, the audit chain's, the console's, the migrations'):
#: never personal-data tables a right may read, correct or erase (an erasure could otherwise
#: delete the inbox, the audit log or the console's admin accounts).
RESERVED_TABLES = frozenset(
    {
        "inbox",
        "audit_log",
        "audit_chain_head",
        "audit_checkpoints",
        "event_outbox",
        "notification_outbox",
        "schema_migrations",
        "console_admins",
        "console_sessions",
        "console_package_reviews",
    }
)


def _identifier(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{what} must be a plain lower-case identifier")
    return name


ColumnErasure = Literal["null", "mask", "deidentify", "keep"]
#: The data source that is privacyops' own store (SQLite by default): the default of every
#: table, so the quick start needs no source configured.
EMBEDDED = "embedded"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnMap(_Model):
    category: str
    personal: bool = True
    correctable: bool = False
    erasure: ColumnErasure = "null"
    format: Literal["text", "date", "sa_id"] = "text"
    row_key: str | None = Field(
        None, description="For key-value tables: the column that names the row (e.g. kind)."
    )


class TableMap(_Model):
    description: str
    data_source: str = Field(
        EMBEDDED,
        description="The named data source holding the table (PRIVACYOPS_SOURCES); its URL "
        "and credentials come from the environment, never from the map.",
    )
    subject_column: str = "subject_ref"
    record_column: str | None = Field(
        None,
        description="The account a row belongs to, when it does: holds apply per record "
        "(an account with its payments and the notes about it).",
    )
    purposes: list[str] = Field(default_factory=list, description="Why it is processed.")
    source: str = Field("", description="Where the data comes from (POPIA s23(1)(b)).")
    disclosed_to: list[str] = Field(default_factory=list)
    provided_by_subject: bool = False
    hold_group: str
    erasure: Literal["delete_row", "deidentify"] = "delete_row"
    columns: dict[str, ColumnMap]

    @model_validator(mode="after")
    def _names_are_identifiers(self) -> Self:
        for name in [
            self.subject_column,
            *([self.record_column] if self.record_column else []),
            *self.columns,
        ]:
            _identifier(name, "a column name")
        _identifier(self.data_source, "data_source")
        for column in self.columns.values():
            if column.row_key is not None:
                _identifier(column.row_key, "row_key")
        return self

    def personal_columns(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.personal]

    def categories(self) -> list[str]:
        return sorted({c.category for c in self.columns.values() if c.personal})


class DataMap(_Model):
    tables: dict[str, TableMap]

    @model_validator(mode="after")
    def _table_names_are_identifiers(self) -> Self:
        for name in self.tables:
            _identifier(name, "a table name")
            if name in RESERVED_TABLES:
                raise ValueError("the data map may not name privacyops' own tables")
        return self

    def correctable(self, field: str) -> tuple[str, str, ColumnMap, str | None] | None:
        """``table.column`` -> (table, column, its map, row key) if the subject may correct it.

        Key-value tables name the row instead of the column: ``contact_points.email`` is
        the ``value`` of the row whose ``kind`` (the column's ``row_key``) is ``email``.
        """
        table_name, _, name = field.partition(".")
        table = self.tables.get(table_name)
        if table is None:
            return None
        column = table.columns.get(name)
        if column is not None:
            usable = column.correctable and column.row_key is None
            return (table_name, name, column, None) if usable else None
        for column_name, spec in table.columns.items():
            if spec.correctable and spec.row_key:
                return table_name, column_name, spec, name
        return None

    def tables_in(self, scope: str) -> list[str]:
        """The tables a restriction scope covers: ``*`` all, a table, or a column category."""
        if scope == "*":
            return list(self.tables)
        table = scope.partition(":")[0]  # "accounts:acc-1": the records of one account
        if table in self.tables:
            return [table]
        return [
            name
            for name, table in self.tables.items()
            if any(column.category == scope for column in table.columns.values())
        ]

    def sources(self) -> list[str]:
        """The sources the map names: the embedded store first, then by name."""
        named = {t.data_source for t in self.tables.values()}
        return sorted(named, key=lambda n: (n != EMBEDDED, n))

    def tables_of(self, source: str) -> list[str]:
        return [name for name, t in self.tables.items() if t.data_source == source]

    def source_of(self, table: str) -> str:
        found = self.tables.get(table)
        return found.data_source if found else EMBEDDED

    def recipients(self, tables: list[str] | None = None) -> list[str]:
        names = tables if tables is not None else list(self.tables)
        return sorted({r for n in names for r in self.tables[n].disclosed_to})


class Hold(_Model):
    name: str
    basis: str
    applies_to: list[str]
    when: Literal["account_open"] | None = None
    statuses: list[str] = Field(default_factory=list)
    from_: list[str] = Field(default_factory=list, alias="from")
    years: int | None = None
    years_by_debt_type: dict[str, int] = Field(default_factory=dict)
    from_by_debt_type: dict[str, list[str]] = Field(default_factory=dict)
    accountable_institutions_only: bool = False

    @model_validator(mode="after")
    def _every_debt_type_has_a_period(self) -> Self:
        """A hold counted in years needs a default: an unlisted debt type is never unheld."""
        if self.when is None and self.years is None:
            raise ValueError(f"hold {self.name!r}: 'years' (the default period) is required")
        return self

    def period_years(self, debt_type: str) -> int | None:
        return self.years_by_debt_type.get(debt_type, self.years)

    def anchors(self, debt_type: str) -> list[str]:
        """The account dates the period runs from (the latest present binds)."""
        return self.from_by_debt_type.get(debt_type, self.from_)


class Retention(_Model):
    accountable_institutions: list[str] = Field(default_factory=list)
    opt_out_years: int = 3
    #: Audit rows older than this are pruned, whole segments behind a signed checkpoint
    #: (``privacyops audit prune``): the proof of what was done outlives the longest
    #: record-keeping duty it evidences (FICA s23, Tax Administration Act s29: 5 years).
    audit_years: int = Field(5, ge=1, le=100)
    holds: list[Hold]


def load_datamap(path: Path | None = None) -> DataMap:
    with (path or CONFIG_DIR / "datamap.toml").open("rb") as handle:
        return DataMap.model_validate(tomllib.load(handle))


def load_retention(path: Path | None = None) -> Retention:
    with (path or CONFIG_DIR / "retention.toml").open("rb") as handle:
        return Retention.model_validate(tomllib.load(handle))


def add_years(day: date, years: int) -> date:
    """The same calendar day ``years`` later; 29 February falls back to the 28th."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)
