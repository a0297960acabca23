"""Schema and queries of the security worker and its admin commands.

Every breach is documented, notified or not (GDPR art 33(5)): the incident, each
alert (with its free-text description, kept here and never logged), a timeline
of every change with its cause, the affected subjects with the notice phase
each was told, the accounts locked, and the regulator report record.

Writes are upserts with absolute values so that the runtime's staged writes,
grouped by statement, give the same result in any order within a batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from infra.store import Row, Transaction
from infra.store.migrations import Migration, Schema, portable
from messages.security import (
    AlertCategory,
    AlertSource,
    Compromise,
    DataCategory,
    IncidentStatus,
    PersonalData,
    Severity,
)
from workers.security.rules import REPORT_WITHIN, Incident, breach_type

BASELINE = """
CREATE TABLE IF NOT EXISTS security_incidents (
    tenant_id          TEXT NOT NULL,
    incident_id        TEXT NOT NULL,
    fingerprint        TEXT NOT NULL,
    source             TEXT NOT NULL,
    category           TEXT NOT NULL,
    target_system      TEXT NOT NULL,
    status             TEXT NOT NULL,
    alert_categories   TEXT NOT NULL,
    data_categories    TEXT NOT NULL,
    personal_data      TEXT NOT NULL,
    score              REAL NOT NULL,
    severity           TEXT NOT NULL,
    alert_count        INTEGER NOT NULL,
    subject_count      INTEGER NOT NULL,
    first_detected_at  TEXT NOT NULL,
    last_detected_at   TEXT NOT NULL,
    opened_at          TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    compromise         TEXT,
    aware_at           TEXT,
    phase              INTEGER NOT NULL,
    escalated          INTEGER NOT NULL,
    unauthorised_party TEXT,
    PRIMARY KEY (tenant_id, incident_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS security_incidents_fingerprint
    ON security_incidents (tenant_id, fingerprint, status);

CREATE TABLE IF NOT EXISTS security_alerts (
    tenant_id          TEXT NOT NULL,
    alert_id           TEXT NOT NULL,
    incident_id        TEXT NOT NULL,
    message_id         TEXT NOT NULL,
    source             TEXT NOT NULL,
    category           TEXT NOT NULL,
    severity_hint      TEXT,
    detected_at        TEXT NOT NULL,
    personal_data      TEXT NOT NULL,
    data_categories    TEXT NOT NULL,
    target             TEXT NOT NULL,
    subject_count      INTEGER NOT NULL,
    unauthorised_party TEXT,
    description        TEXT NOT NULL,
    received_at        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, alert_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS security_alerts_incident ON security_alerts (tenant_id, incident_id);

CREATE TABLE IF NOT EXISTS security_timeline (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    at          TEXT NOT NULL,
    change      TEXT NOT NULL,
    from_value  TEXT,
    to_value    TEXT,
    cause       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS security_timeline_incident
    ON security_timeline (tenant_id, incident_id);

CREATE TABLE IF NOT EXISTS security_incident_subjects (
    tenant_id   TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    added_at    TEXT NOT NULL,
    phase_told  INTEGER NOT NULL,
    told_at     TEXT,
    PRIMARY KEY (tenant_id, incident_id, subject_ref)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS security_incident_accounts (
    tenant_id   TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    locked_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, incident_id, account_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS security_reports (
    tenant_id       TEXT NOT NULL,
    incident_id     TEXT NOT NULL,
    compromise      TEXT NOT NULL,
    breach_type     TEXT NOT NULL,
    data_categories TEXT NOT NULL,
    subject_count   INTEGER NOT NULL,
    notified_how    TEXT NOT NULL,
    incident_date   TEXT NOT NULL,
    aware_at        TEXT NOT NULL,
    due_at          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    sent_at         TEXT,
    delay_reason    TEXT,
    flag            TEXT,
    PRIMARY KEY (tenant_id, incident_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS security_reports_unsent ON security_reports (due_at)
    WHERE sent_at IS NULL;
"""

SECURITY = Schema(
    "security",
    (Migration(1, "incidents, alerts, timeline, subjects, accounts, reports", portable(BASELINE)),),
)

#: POPIA s22(4): in writing, by at least one of post, e-mail, website or news media.
NOTIFIED_HOW = "written notice to each subject by e-mail, or SMS where no e-mail is held"

INCIDENT_COLUMNS = (
    "tenant_id, incident_id, fingerprint, source, category, target_system, status,"
    " alert_categories, data_categories, personal_data, score, severity, alert_count,"
    " subject_count, first_detected_at, last_detected_at, opened_at, updated_at, compromise,"
    " aware_at, phase, escalated, unauthorised_party"
)
_MUTABLE = (
    "status, alert_categories, data_categories, personal_data, score, severity, alert_count,"
    " subject_count, first_detected_at, last_detected_at, updated_at, compromise, aware_at,"
    " phase, escalated, unauthorised_party"
)
INCIDENT_UPSERT = (
    f"INSERT INTO security_incidents ({INCIDENT_COLUMNS}) VALUES ({', '.join('?' * 23)})"
    " ON CONFLICT (tenant_id, incident_id) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _MUTABLE.split(","))
)
ALERT_INSERT = (
    "INSERT INTO security_alerts (tenant_id, alert_id, incident_id, message_id, source,"
    " category, severity_hint, detected_at, personal_data, data_categories, target,"
    " subject_count, unauthorised_party, description, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TIMELINE_INSERT = (
    "INSERT INTO security_timeline (tenant_id, incident_id, at, change, from_value, to_value,"
    " cause) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SUBJECT_UPSERT = (
    "INSERT INTO security_incident_subjects (tenant_id, incident_id, subject_ref, added_at,"
    " phase_told, told_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, incident_id,"
    " subject_ref) DO UPDATE SET phase_told = CASE WHEN excluded.phase_told >"
    " security_incident_subjects.phase_told THEN excluded.phase_told"
    " ELSE security_incident_subjects.phase_told END,"
    " told_at = coalesce(excluded.told_at, security_incident_subjects.told_at)"
)
ACCOUNT_INSERT = (
    "INSERT INTO security_incident_accounts (tenant_id, incident_id, account_id,"
    " locked_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
REPORT_UPSERT = (
    "INSERT INTO security_reports (tenant_id, incident_id, compromise, breach_type,"
    " data_categories, subject_count, notified_how, incident_date, aware_at, due_at,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, incident_id) DO UPDATE SET compromise = excluded.compromise,"
    " breach_type = excluded.breach_type, data_categories = excluded.data_categories,"
    " subject_count = excluded.subject_count, incident_date = excluded.incident_date,"
    " updated_at = excluded.updated_at"
)
_CHUNK = 300


@lru_cache(maxsize=8_192)
def iso(moment: datetime) -> str:
    """ISO text of a time (memoised: an incident's times repeat in every row written)."""
    return moment.isoformat(timespec="microseconds")


def names(values: Iterable[Any]) -> str:
    return _names(frozenset(values))


@lru_cache(maxsize=1_024)
def _names(values: frozenset[Any]) -> str:
    return json.dumps(sorted(v.value for v in values))


def incident_row(i: Incident) -> Row:
    return (
        i.tenant_id,
        i.incident_id,
        i.fingerprint,
        i.source.value,
        i.category.value,
        i.target_system,
        i.status.value,
        names(i.alert_categories),
        names(i.data_categories),
        i.personal_data.value,
        i.score,
        i.severity.value,
        i.alert_count,
        i.subject_count,
        iso(i.first_detected_at),
        iso(i.last_detected_at),
        iso(i.opened_at),
        iso(i.updated_at),
        i.compromise.value if i.compromise else None,
        iso(i.aware_at) if i.aware_at else None,
        i.phase,
        int(i.escalated),
        i.unauthorised_party,
    )


def incident_from(row: Row) -> Incident:
    moment = datetime.fromisoformat
    return Incident(
        tenant_id=row[0],
        incident_id=row[1],
        fingerprint=row[2],
        source=AlertSource(row[3]),
        category=AlertCategory(row[4]),
        target_system=row[5],
        status=IncidentStatus(row[6]),
        alert_categories=frozenset(AlertCategory(c) for c in json.loads(row[7])),
        data_categories=frozenset(DataCategory(c) for c in json.loads(row[8])),
        personal_data=PersonalData(row[9]),
        score=float(row[10]),
        severity=Severity(row[11]),
        alert_count=int(row[12]),
        subject_count=int(row[13]),
        first_detected_at=moment(row[14]),
        last_detected_at=moment(row[15]),
        opened_at=moment(row[16]),
        updated_at=moment(row[17]),
        compromise=Compromise(row[18]) if row[18] else None,
        aware_at=moment(row[19]) if row[19] else None,
        phase=int(row[20]),
        escalated=bool(row[21]),
        unauthorised_party=row[22],
    )


def report_row(i: Incident, now: datetime) -> Row:
    """The regulator report record's fields (POPIA s22; GDPR art 33(3)) as they stand for ``i``."""
    assert i.compromise is not None
    assert i.aware_at is not None
    return (
        i.tenant_id,
        i.incident_id,
        i.compromise.value,
        breach_type(i.alert_categories).value,
        names(i.data_categories),
        i.subject_count,
        NOTIFIED_HOW,
        iso(i.first_detected_at),
        iso(i.aware_at),
        iso(i.aware_at + REPORT_WITHIN),
        iso(now),
        iso(now),
    )


async def _chunked(
    tx: Transaction, keys: Sequence[tuple[str, ...]], select: str, join: str
) -> list[Row]:
    """Run ``select`` joined with ``keys`` as a VALUES table ``k``, a chunk at a time."""
    rows: list[Row] = []
    width = len(keys[0]) if keys else 0
    columns = ", ".join(f"c{n}" for n in range(width))
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        values = ", ".join("(" + ", ".join("?" * width) + ")" for _ in chunk)
        rows += await tx.fetchall(
            f"WITH k({columns}) AS (VALUES {values}) {select} JOIN k ON {join}",
            [part for key in chunk for part in key],
        )
    return rows


async def open_incident_rows(tx: Transaction, keys: Sequence[tuple[str, str]]) -> list[Row]:
    """Not-closed incident rows of the given (tenant, fingerprint) pairs, one query a chunk."""
    return await _chunked(
        tx,
        keys,
        f"SELECT {', '.join('i.' + c.strip() for c in INCIDENT_COLUMNS.split(','))}"
        " FROM security_incidents i",
        "i.tenant_id = k.c0 AND i.fingerprint = k.c1 WHERE i.status != 'closed'",
    )


async def seen_alerts(tx: Transaction, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    rows = await _chunked(
        tx,
        keys,
        "SELECT a.tenant_id, a.alert_id FROM security_alerts a",
        "a.tenant_id = k.c0 AND a.alert_id = k.c1",
    )
    return {(r[0], r[1]) for r in rows}


async def told_subjects(tx: Transaction, keys: Sequence[tuple[str, str, str]]) -> list[Row]:
    """(tenant, incident, subject, phase_told) for the given triples."""
    return await _chunked(
        tx,
        keys,
        "SELECT s.tenant_id, s.incident_id, s.subject_ref, s.phase_told"
        " FROM security_incident_subjects s",
        "s.tenant_id = k.c0 AND s.incident_id = k.c1 AND s.subject_ref = k.c2",
    )


async def subjects_of(tx: Transaction, keys: Sequence[tuple[str, str]]) -> list[Row]:
    """(tenant, incident, subject, phase_told) of every subject of the given incidents."""
    return await _chunked(
        tx,
        keys,
        "SELECT s.tenant_id, s.incident_id, s.subject_ref, s.phase_told"
        " FROM security_incident_subjects s",
        "s.tenant_id = k.c0 AND s.incident_id = k.c1",
    )


async def all_subjects(tx: Transaction, tenant_id: str, incident_id: str) -> dict[str, int]:
    rows = await tx.fetchall(
        "SELECT subject_ref, phase_told FROM security_incident_subjects"
        " WHERE tenant_id = ? AND incident_id = ?",
        (tenant_id, incident_id),
    )
    return {r[0]: int(r[1]) for r in rows}


async def locked_accounts(
    tx: Transaction, keys: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    rows = await _chunked(
        tx,
        keys,
        "SELECT a.tenant_id, a.incident_id, a.account_id FROM security_incident_accounts a",
        "a.tenant_id = k.c0 AND a.incident_id = k.c1 AND a.account_id = k.c2",
    )
    return {(r[0], r[1], r[2]) for r in rows}


async def find_incident(
    tx: Transaction, incident_id: str, tenant_id: str | None = None
) -> Incident | None:
    row = await tx.fetchone(
        f"SELECT {INCIDENT_COLUMNS} FROM security_incidents WHERE incident_id = ?"
        " AND (CAST(? AS TEXT) IS NULL OR tenant_id = ?)",
        (incident_id, tenant_id, tenant_id),
    )
    return incident_from(row) if row else None
