"""Helpers of the DSR tests: planted subjects, requests, and reading the store back."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random
from typing import Any

from config.datamap import load_datamap
from config.settings import Settings
from infra.keys import Keys
from infra.runtime.service import Service
from infra.runtime.worker import Worker
from messages.dsr import (
    DsrRequested,
    DsrRequestedPayload,
    DsrVerified,
    DsrVerifiedPayload,
    SubjectIdentifiers,
)
from tests.support.db import connect
from tests.support.helpers import ServiceFactory, migrated_store, wait_until
from workers.consent import ConsentWorker
from workers.dsr import DsrWorker, package
from workers.notifier import NotifierWorker
from workers.platform.seed import sa_id_number, seed

DATAMAP = load_datamap()
EMAIL, PHONE = "thandi.nkosi@example.co.za", "+27825550199"
SA_ID = sa_id_number(Random(1), date(1985, 1, 1))
BAD_ID = SA_ID[:-1] + str((int(SA_ID[-1]) + 1) % 10)
NOW = datetime.now(UTC)


def sql(db: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    with connect(db, timeout=30) as conn:
        return [tuple(row) for row in conn.execute(query, params).fetchall()]


def snapshot(db: Path, exclude: tuple[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every data-map row except those of one (tenant, subject) and de-identified ones."""
    tenant, subject = exclude
    return {
        name: sorted(
            sql(
                db,
                f"SELECT * FROM {name} WHERE NOT (tenant_id = ? AND {t.subject_column} = ?)"
                f" AND {t.subject_column} NOT LIKE 'anon-%'",
                tenant,
                subject,
            ),
            key=repr,
        )
        for name, t in DATAMAP.tables.items()
    }


def plant(
    db: Path,
    tenant: str,
    subject: str,
    *,
    account: str,
    closed: str | None = None,
    id_number: str = SA_ID,
    account_id: str | None = None,
) -> str:
    """One debtor with a row in every table of the data map; the account's id."""
    account_id = (
        account_id or "acc-" + hashlib.sha256(f"{tenant}/{subject}".encode()).hexdigest()[:8]
    )
    with connect(db, timeout=30) as conn:
        conn.execute(
            "INSERT INTO debtors (tenant_id, subject_ref, first_name, last_name, id_number,"
            " date_of_birth, created_at) VALUES (?, ?, 'Thandi', 'Nkosi', ?, '1985-01-01', ?)",
            (tenant, subject, id_number, NOW.isoformat()),
        )
        conn.executemany(
            "INSERT INTO contact_points (tenant_id, subject_ref, kind, value, is_primary)"
            " VALUES (?, ?, ?, ?, 1)",
            [(tenant, subject, "email", EMAIL), (tenant, subject, "phone", PHONE)],
        )
        add_account(conn, tenant, subject, account_id, account, closed=closed)
        conn.execute(
            "INSERT INTO communications (tenant_id, subject_ref, channel, sent_at, summary)"
            " VALUES (?, ?, 'sms', '2015-02-01', 'Reminder')",
            (tenant, subject),
        )
        conn.execute(
            "INSERT INTO notes (tenant_id, subject_ref, author, written_at, body)"
            " VALUES (?, ?, 'agent-1', '2015-02-02', 'Called')",
            (tenant, subject),
        )
        conn.execute(
            "INSERT INTO consent_state (tenant_id, subject_ref, channel, purpose, status,"
            " effective_at, source, message_id, updated_at) VALUES (?, ?, 'email',"
            " 'direct_marketing', 'withdrawn', ?, 'web_form', 'm1', ?)",
            (tenant, subject, NOW.isoformat(), NOW.isoformat()),
        )
        conn.execute(
            "INSERT INTO consent_history (tenant_id, subject_ref, channel, purpose,"
            " status, source, evidence, occurred_at, message_id, outcome, recorded_at)"
            " VALUES (?, ?, 'email', 'direct_marketing', 'withdrawn', 'web_form', '{}',"
            " ?, 'm1', 'applied', ?)",
            (tenant, subject, NOW.isoformat(), NOW.isoformat()),
        )
    return account_id


def add_account(
    conn: Any,
    tenant: str,
    subject: str,
    account_id: str,
    status: str,
    *,
    closed: str | None = None,
    paid: str | None = "2015-01-01",
    debt_type: str = "ordinary",
    judgment_on: str | None = None,
    note: str | None = None,
) -> None:
    """An account of the subject with one payment (and a note about it, if given)."""
    conn.execute(
        "INSERT INTO accounts (account_id, tenant_id, subject_ref, creditor, reference,"
        " debt_type, balance_cents, status, opened_on, closed_on, last_payment_on, judgment_on)"
        " VALUES (?, ?, ?, 'Ubuntu Bank', ?, ?, 150000, ?, '2014-01-01', ?, ?, ?)",
        (
            account_id,
            tenant,
            subject,
            f"REF-{account_id}",
            debt_type,
            status,
            closed,
            paid,
            judgment_on,
        ),
    )
    conn.execute(
        "INSERT INTO payments (tenant_id, subject_ref, account_id, amount_cents, paid_on,"
        " method, bank_reference) VALUES (?, ?, ?, 5000, ?, 'eft', ?)",
        (tenant, subject, account_id, paid or "2014-06-01", f"BANK-{account_id}"),
    )
    if note is not None:
        conn.execute(
            "INSERT INTO notes (tenant_id, subject_ref, author, written_at, body, account_id)"
            " VALUES (?, ?, 'agent-2', '2015-03-03', ?, ?)",
            (tenant, subject, note, account_id),
        )


async def start_dsr(
    settings: Settings, start_service: ServiceFactory, tmp_path: Path, *, notifier: bool = False
) -> Service:
    """The DSR worker (first) and the consent worker on a seeded store with planted subjects;
    with ``notifier``, also the notifier, writing notices under ``tmp_path / "out"``."""
    changed = settings.with_changes(
        export_dir=tmp_path / "exports",
        restriction_lift_notice_hours=0,
        notify_dir=tmp_path / "out",
        outbox_poll_s=0.05,
    )
    async with migrated_store(settings) as store:
        await seed(store, ["acme", "bravo"], 30)
    db = settings.db_path
    plant(db, "acme", "debtor-open", account="open", account_id="acc-1001")
    plant(
        db,
        "acme",
        "debtor-gone",
        account="closed",
        closed="2015-06-30",
        id_number=sa_id_number(Random(2), date(1970, 3, 3)),
        account_id="acc-1002",
    )
    plant(
        db,
        "bravo",
        "debtor-open",
        account="open",
        id_number=sa_id_number(Random(3), date(1990, 7, 7)),
        account_id="acc-2001",
    )
    workers: list[Worker] = [DsrWorker(changed), ConsentWorker()]
    if notifier:
        workers.append(NotifierWorker(changed))
    return await start_service(
        workers,
        export_dir=changed.export_dir,
        restriction_lift_notice_hours=0,
        notify_dir=changed.notify_dir,
        outbox_poll_s=changed.outbox_poll_s,
    )


def request(
    request_id: str,
    kind: str,
    subject: str = "debtor-open",
    *,
    verified: bool = True,
    details: dict[str, Any] | None = None,
    tenant: str = "acme",
    received_at: datetime | None = None,
    regime: str = "popia",
    reply_to: str = "email",
    **subject_ids: Any,
) -> DsrRequested:
    return DsrRequested(
        tenant_id=tenant,
        payload=DsrRequestedPayload.model_validate(
            {
                "request_id": request_id,
                "kind": kind,
                "identity_verified": verified,
                "subject": SubjectIdentifiers(subject_ref=subject, **subject_ids),
                "received_at": received_at or NOW,
                "regime": regime,
                "reply_to": {"channel": reply_to},
                "details": {"kind": kind, **(details or {})},
            }
        ),
    )


async def answered(
    db: Path,
    request_id: str,
    statuses: tuple[str, ...] = (
        "completed",
        "partially_completed",
        "refused",
        "awaiting_verification",
    ),
) -> str:
    async def done() -> bool:
        rows = sql(db, "SELECT status FROM dsr_requests WHERE request_id = ?", request_id)
        return bool(rows) and rows[0][0] in statuses

    await wait_until(done)
    return str(sql(db, "SELECT status FROM dsr_requests WHERE request_id = ?", request_id)[0][0])


def keys_of(db: Path) -> Keys:
    """The test's keys (the settings fixture keeps them beside the store)."""
    return Keys.from_settings(Settings(key_dir=db.parent / "keys", db_encryption="none"))


#: The order a request's notices are queued in; notices queued by one message share a time.
LIFECYCLE = (
    "dsr_received",
    "dsr_verification_needed",
    "dsr_extended",
    "dsr_package_ready",
    "restriction_lifting",
    "dsr_completed",
    "dsr_refused",
    "dsr_deemed_refused",
)


def notices(db: Path, request_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Each notice's context, with its sealed secrets opened (as only the notifier does)."""
    rows = sql(db, "SELECT created_at, kind, context, sealed FROM notification_outbox")
    rows.sort(key=lambda r: (r[0], LIFECYCLE.index(r[1]) if r[1] in LIFECYCLE else 99))
    sealer = keys_of(db).notice
    found = [
        (kind, {**json.loads(ctx), **(json.loads(sealer.open(sealed)) if sealed else {})})
        for _, kind, ctx, sealed in rows
    ]
    return [(kind, ctx) for kind, ctx in found if ctx.get("request_id") == request_id]


def verified(request_id: str, tenant: str = "acme", **more: Any) -> DsrVerified:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "verified_by": "agent-17",
        "method": "id_document",
        "verified_at": NOW,
        **more,
    }
    return DsrVerified(tenant_id=tenant, payload=DsrVerifiedPayload.model_validate(fields))


def package_document(db: Path, settings: Settings, request_id: str) -> dict[str, Any]:
    """The subject.json of a request's access or portability package, decrypted."""
    [(path,)] = sql(db, "SELECT path FROM dsr_packages WHERE request_id = ?", request_id)
    key = Keys.from_settings(settings).export
    archive = zipfile.ZipFile(io.BytesIO(package.unseal(Path(path), key)))
    document: dict[str, Any] = json.loads(archive.read("subject.json"))
    return document


def execute(db: Path, statement: str, *params: object) -> None:
    """One write through the test's own connection to the store, committed."""
    with connect(db, timeout=30) as conn:
        conn.execute(statement, params)


async def off_loop(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a direct write in a thread while a service runs on this event loop.

    A write on the loop's own thread would wait for the service's open transaction
    while keeping the service from committing it: both stall until the busy timeout.
    """
    return await asyncio.to_thread(write, *args, **kwargs)
