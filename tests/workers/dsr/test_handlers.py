"""The DSR worker end to end: real RabbitMQ, real SQLite file, seeded platform data."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import pytest

from config.datamap import load_datamap
from config.settings import Settings
from infra.headers import H_ERROR, H_ERROR_TYPE
from infra.keys import Keys
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.dsr import (
    DsrExtended,
    DsrExtendedPayload,
    DsrRequested,
    DsrRequestedPayload,
    DsrVerified,
    DsrVerifiedPayload,
    SubjectIdentifiers,
)
from messages.registry import decode
from tests.support.helpers import (
    ServiceFactory,
    drain_queue,
    log_lines,
    migrated_store,
    queue_depth,
    wait_until,
)
from workers.consent import is_contactable
from workers.dsr import DsrWorker, package
from workers.dsr.rules import due_on
from workers.dsr.sweeps import run_all
from workers.platform.seed import sa_id_number, seed

DATAMAP = load_datamap()
EMAIL, PHONE = "thandi.nkosi@example.co.za", "+27825550199"
SA_ID = sa_id_number(Random(1), date(1985, 1, 1))
BAD_ID = SA_ID[:-1] + str((int(SA_ID[-1]) + 1) % 10)
NOW = datetime.now(UTC)


def sql(db: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


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
) -> None:
    """One debtor with a row in every table of the data map."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO debtors VALUES (?, ?, 'Thandi', 'Nkosi', ?, '1985-01-01', ?)",
            (tenant, subject, id_number, NOW.isoformat()),
        )
        conn.executemany(
            "INSERT INTO contact_points (tenant_id, subject_ref, kind, value, is_primary)"
            " VALUES (?, ?, ?, ?, 1)",
            [(tenant, subject, "email", EMAIL), (tenant, subject, "phone", PHONE)],
        )
        conn.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, 'Ubuntu Bank', 'REF1', 'ordinary',"
            " 150000, ?, '2014-01-01', ?, '2015-01-01')",
            (f"{subject}-a1", tenant, subject, account, closed),
        )
        conn.execute(
            "INSERT INTO payments VALUES (?, ?, ?, 5000, '2015-01-01', 'eft', 'B1')",
            (tenant, subject, f"{subject}-a1"),
        )
        conn.execute(
            "INSERT INTO communications VALUES (?, ?, 'sms', '2015-02-01', 'Reminder')",
            (tenant, subject),
        )
        conn.execute(
            "INSERT INTO notes VALUES (?, ?, 'agent-1', '2015-02-02', 'Called')", (tenant, subject)
        )
        conn.execute(
            "INSERT INTO consent_state VALUES (?, ?, 'email', 'direct_marketing',"
            " 'withdrawn', ?, 'web_form', 'm1', ?)",
            (tenant, subject, NOW.isoformat(), NOW.isoformat()),
        )
        conn.execute(
            "INSERT INTO consent_history (tenant_id, subject_ref, channel, purpose,"
            " status, source, evidence, occurred_at, message_id, outcome, recorded_at)"
            " VALUES (?, ?, 'email', 'direct_marketing', 'withdrawn', 'web_form', '{}',"
            " ?, 'm1', 'applied', ?)",
            (tenant, subject, NOW.isoformat(), NOW.isoformat()),
        )


@pytest.fixture
async def dsr(settings: Settings, start_service: ServiceFactory, tmp_path: Path) -> Service:
    changed = settings.with_changes(
        export_dir=tmp_path / "exports",
        restriction_lift_notice_hours=0,
    )
    async with migrated_store(settings) as store:
        await seed(store, ["acme", "bravo"], 30)
    db = settings.db_path
    plant(db, "acme", "debtor-open", account="open")
    plant(
        db,
        "acme",
        "debtor-gone",
        account="closed",
        closed="2015-06-30",
        id_number=sa_id_number(Random(2), date(1970, 3, 3)),
    )
    plant(
        db,
        "bravo",
        "debtor-open",
        account="open",
        id_number=sa_id_number(Random(3), date(1990, 7, 7)),
    )
    return await start_service(
        [DsrWorker(changed)],
        **{
            k: getattr(changed, k)
            for k in ("export_dir", "export_key_file", "restriction_lift_notice_hours")
        },
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


def notices(db: Path, request_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Each notice's context, with its sealed secrets opened (as only the notifier does)."""
    rows = sql(
        db, "SELECT kind, context, sealed FROM notification_outbox ORDER BY created_at, rowid"
    )
    sealer = keys_of(db).notice
    found = [
        (kind, {**json.loads(ctx), **(json.loads(sealer.open(sealed)) if sealed else {})})
        for kind, ctx, sealed in rows
    ]
    return [(kind, ctx) for kind, ctx in found if ctx.get("request_id") == request_id]


async def test_access_exports_every_table_and_nothing_of_anyone_else(
    dsr: Service, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    await publisher.publish(request("r-access", "access"))
    assert await answered(db, "r-access") == "completed"
    kinds = [kind for kind, _ in notices(db, "r-access")]
    assert kinds == ["dsr_received", "dsr_package_ready", "dsr_completed"]
    ready = dict(notices(db, "r-access"))["dsr_package_ready"]
    [(path, digest)] = sql(db, "SELECT path, token_digest FROM dsr_packages")
    assert digest == package.token_digest(ready["token"])
    sealed = Path(path).read_bytes()
    assert not sealed.startswith(b"PK")  # encrypted at rest
    assert SA_ID.encode() not in sealed
    key = keys_of(db).export
    archive = zipfile.ZipFile(io.BytesIO(package.unseal(Path(path), key)))
    names = set(archive.namelist())
    assert names >= {"subject.json", *(f"{t}.csv" for t in DATAMAP.tables)}
    document = json.loads(archive.read("subject.json"))
    assert set(document["tables"]) == set(DATAMAP.tables)
    assert all(document["tables"][t]["rows"] for t in DATAMAP.tables)
    assert document["tables"]["debtors"]["rows"][0]["id_number"] == SA_ID
    assert "the creditor (account holder)" in document["recipients"]
    others = [
        r[0]
        for r in sql(
            db,
            "SELECT id_number FROM debtors WHERE NOT (tenant_id = 'acme'"
            " AND subject_ref = 'debtor-open')",
        )
    ]
    text = archive.read("subject.json").decode()
    assert not any(number in text for number in others)


async def test_unverified_erasure_touches_nothing_then_verified_is_partial(
    dsr: Service, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    db = settings.db_path
    before_all = snapshot(db, ("none", "none"))
    await publisher.publish(
        request("r-erase", "erasure", verified=False, email=EMAIL, id_number=SA_ID)
    )
    assert await answered(db, "r-erase") == "awaiting_verification"
    assert snapshot(db, ("none", "none")) == before_all
    assert [k for k, _ in notices(db, "r-erase")] == ["dsr_received", "dsr_verification_needed"]

    before = snapshot(db, ("acme", "debtor-open"))
    await publisher.publish(
        DsrVerified(
            tenant_id="acme",
            payload=DsrVerifiedPayload(request_id="r-erase", method="id_document", verified_at=NOW),
        )
    )
    assert await answered(db, "r-erase", ("partially_completed",)) == "partially_completed"

    assert snapshot(db, ("acme", "debtor-open")) == before  # no other subject or tenant
    assert sql(
        db, "SELECT count(*) FROM debtors WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'"
    ) == [(1,)]
    assert sql(
        db,
        "SELECT count(*) FROM consent_history WHERE subject_ref = 'debtor-open'"
        " AND tenant_id = 'acme'",
    ) == [(0,)]
    held = dict(
        sql(
            db,
            "SELECT scope, basis FROM restrictions WHERE tenant_id = 'acme'"
            " AND subject_ref = 'debtor-open'",
        )
    )
    assert set(held) == {
        "debtors",
        "contact_points",
        "accounts",
        "payments",
        "communications",
        "notes",
    }
    assert "open debt" in held["accounts"].lower()
    assert sql(db, "SELECT channel, basis FROM suppression_list") == [
        ("email", "NCR reg 58(4): opt-out kept 3 years")
    ]
    assert EMAIL not in repr(sql(db, "SELECT * FROM suppression_list"))
    [(_, reason)] = sql(
        db,
        "SELECT to_status, reason FROM dsr_transitions WHERE request_id ="
        " 'r-erase' AND to_status = 'partially_completed'",
    )
    assert "accounts (open_debt)" in reason
    assert not await is_contactable(dsr.store, "acme", "debtor-open", "email")
    assert EMAIL not in log_output.getvalue()
    assert SA_ID not in log_output.getvalue()


async def test_erasure_after_the_holds_expire_completes(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    before = snapshot(db, ("acme", "debtor-gone"))
    await publisher.publish(request("r-gone", "erasure", "debtor-gone"))
    assert await answered(db, "r-gone") == "completed"
    assert snapshot(db, ("acme", "debtor-gone")) == before
    for name, table in DATAMAP.tables.items():
        rows = sql(
            db,
            f"SELECT count(*) FROM {name} WHERE tenant_id = 'acme'"
            f" AND {table.subject_column} = 'debtor-gone'",
        )
        assert rows == [(0,)], name
    [(anon, amount, bank)] = sql(
        db,
        "SELECT subject_ref, amount_cents, bank_reference"
        " FROM payments WHERE account_id = 'debtor-gone-a1'",
    )
    assert anon.startswith("anon-")
    assert (amount, bank) == (5000, None)

    # the open debtor: partial now, complete once the account closed long enough ago
    await publisher.publish(request("r-later", "erasure"))
    assert await answered(db, "r-later") == "partially_completed"
    async with dsr.store.transaction() as tx:  # through the service's store: same loop
        await tx.execute(
            "UPDATE accounts SET status = 'closed', closed_on = '2016-01-01'"
            " WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'"
        )
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    report = await run_all(worker, dsr.store, dsr.outboxes, datetime.now(UTC))
    assert report.erasures_run == 1
    assert await answered(db, "r-later", ("completed",)) == "completed"
    assert sql(
        db, "SELECT count(*) FROM debtors WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'"
    ) == [(0,)]
    assert sql(
        db, "SELECT count(*) FROM debtors WHERE tenant_id = 'bravo' AND subject_ref = 'debtor-open'"
    ) == [(1,)]
    await dsr.outboxes.idle()
    parked = await drain_queue(settings.amqp_url.get_secret_value(), dsr.names.unrouted)
    erased = [decode(m.body) for m in parked if m.routing_key == "subject.erased"]
    assert {e.payload.request_id for e in erased} == {"r-gone", "r-later"}


async def test_rectification_refused_field_leaves_a_note(
    dsr: Service, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    db = settings.db_path
    corrections = [
        {"field": "debtors.last_name", "value": "Nkosi-Dube"},
        {"field": "contact_points.email", "value": "new.address@example.com"},
        {"field": "accounts.balance_cents", "value": "0"},
    ]
    await publisher.publish(request("r-fix", "rectification", details={"corrections": corrections}))
    assert await answered(db, "r-fix") == "partially_completed"
    assert sql(
        db, "SELECT last_name FROM debtors WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'"
    ) == [("Nkosi-Dube",)]
    assert sql(
        db,
        "SELECT value FROM contact_points WHERE tenant_id = 'acme' AND subject_ref ="
        " 'debtor-open' AND kind = 'email'",
    ) == [("new.address@example.com",)]
    assert sql(db, "SELECT field FROM dsr_correction_notes") == [("accounts.balance_cents",)]
    details = [
        json.loads(d)
        for (d,) in sql(db, "SELECT details FROM audit_log WHERE action = 'field_rectified'")
    ]
    assert {"before_digest", "after_digest"} <= set(details[0])
    assert "Nkosi" not in json.dumps(details)
    assert "new.address@example.com" not in log_output.getvalue()

    await publisher.publish(request("r-see", "access"))
    assert await answered(db, "r-see") == "completed"
    [(path,)] = sql(db, "SELECT path FROM dsr_packages WHERE request_id = 'r-see'")
    key = keys_of(db).export
    document = json.loads(
        zipfile.ZipFile(io.BytesIO(package.unseal(Path(path), key))).read("subject.json")
    )
    assert document["corrections_requested_but_not_made"][0]["field"] == "accounts.balance_cents"


async def test_restriction_and_its_lifting(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    async with dsr.store.transaction() as tx:
        await tx.execute(
            "UPDATE consent_state SET status = 'granted' WHERE tenant_id = 'acme'"
            " AND subject_ref = 'debtor-open'"
        )
    assert await is_contactable(dsr.store, "acme", "debtor-open", "email")
    await publisher.publish(request("r-stop", "restriction", verified=False))
    assert await answered(db, "r-stop") == "completed"
    assert not await is_contactable(dsr.store, "acme", "debtor-open", "email")

    await publisher.publish(
        request("r-lift", "restriction", details={"lift": True}, verified=False)
    )
    assert await answered(db, "r-lift") == "awaiting_verification"
    await publisher.publish(
        DsrVerified(
            tenant_id="acme",
            payload=DsrVerifiedPayload(request_id="r-lift", method="otp", verified_at=NOW),
        )
    )
    assert await answered(db, "r-lift", ("completed",)) == "completed"
    assert "restriction_lifting" in [k for k, _ in notices(db, "r-lift")]
    assert not await is_contactable(dsr.store, "acme", "debtor-open", "email")  # told first
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    report = await run_all(
        worker, dsr.store, dsr.outboxes, datetime.now(UTC) + timedelta(seconds=1)
    )
    assert report.lifted == 1
    assert await is_contactable(dsr.store, "acme", "debtor-open", "email")


async def test_objection_to_direct_marketing_withdraws_every_channel(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    details = {"purposes": ["direct_marketing", "profiling", "fica_screening"]}
    await publisher.publish(request("r-object", "objection", verified=False, details=details))
    assert await answered(db, "r-object") == "completed"
    state = sql(
        db,
        "SELECT channel, status, source FROM consent_state WHERE tenant_id = 'acme'"
        " AND subject_ref = 'debtor-open' ORDER BY channel",
    )
    assert [s[0] for s in state] == ["email", "phone", "post", "sms", "whatsapp"]
    assert {s[1] for s in state} == {"withdrawn"}
    assert dict(sql(db, "SELECT purpose, outcome FROM processing_flags")) == {
        "direct_marketing": "consent_withdrawn_on_every_channel",
        "profiling": "processing_stopped",
        "fica_screening": "continued_required_by_legislation",
    }
    assert sql(
        db,
        "SELECT count(*) FROM consent_state WHERE tenant_id = 'bravo'"
        " AND subject_ref = 'debtor-open'",
    ) == [(1,)]


async def test_portability_is_limited_to_provided_data(
    dsr: Service, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    await publisher.publish(
        request("r-port", "portability", details={"destination": "https://new.example/intake"})
    )
    assert await answered(db, "r-port") == "completed"
    [(path,)] = sql(db, "SELECT path FROM dsr_packages")
    key = keys_of(db).export
    document = json.loads(
        zipfile.ZipFile(io.BytesIO(package.unseal(Path(path), key))).read("subject.json")
    )
    provided = {n for n, t in DATAMAP.tables.items() if t.provided_by_subject}
    assert set(document["tables"]) == provided
    await dsr.outboxes.idle()
    parked = await drain_queue(settings.amqp_url.get_secret_value(), dsr.names.unrouted)
    [handover] = [decode(m.body) for m in parked if m.routing_key == "dsr.portability_handover"]
    assert handover.payload.destination == "https://new.example/intake"
    assert (
        package.token_digest(handover.payload.token)
        == sql(db, "SELECT token_digest FROM dsr_packages")[0][0]
    )


async def test_same_request_twice_runs_once(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    message = request("r-twice", "objection", details={"purposes": ["profiling"]})
    await publisher.publish(message)
    await publisher.publish(message)
    again = request("r-twice", "objection", details={"purposes": ["profiling"]})
    await publisher.publish(again)  # same request id, new message id

    async def three() -> bool:
        return sql(db, "SELECT count(*) FROM inbox WHERE worker = 'dsr'") == [(2,)]

    await wait_until(three)
    assert await answered(db, "r-twice") == "completed"
    assert sql(db, "SELECT count(*) FROM processing_flags") == [(1,)]
    assert len(notices(db, "r-twice")) == 2  # received + completed, once
    assert sql(db, "SELECT count(*) FROM audit_log WHERE action = 'dsr_request_repeated'") == [(1,)]


async def test_extension_before_the_due_date_and_refusal_after(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    await publisher.publish(request("r-slow", "access", verified=False, tenant="bravo"))
    assert await answered(db, "r-slow") == "awaiting_verification"
    await publisher.publish(
        DsrExtended(
            tenant_id="bravo",
            payload=DsrExtendedPayload(
                request_id="r-slow", months=1, reason="records must be retrieved from archive"
            ),
        )
    )

    async def extended() -> bool:
        return sql(db, "SELECT extended FROM dsr_requests WHERE request_id = 'r-slow'") == [(1,)]

    await wait_until(extended)
    due = sql(db, "SELECT due_on FROM dsr_requests WHERE request_id = 'r-slow'")[0][0]
    assert due == (due_on(NOW.date()) + timedelta(days=30)).isoformat()  # PAIA s57 for access
    assert "dsr_extended" in [k for k, _ in notices(db, "r-slow")]

    late = request("r-late", "erasure", verified=False, received_at=NOW - timedelta(days=40))
    await publisher.publish(late)
    assert await answered(db, "r-late") == "awaiting_verification"
    await publisher.publish(
        DsrExtended(
            tenant_id="acme",
            payload=DsrExtendedPayload(
                request_id="r-late", months=2, reason="too late for this, the due date has passed"
            ),
        )
    )
    url = settings.amqp_url.get_secret_value()

    async def dead() -> bool:
        return await queue_depth(url, dsr.names.dlq("dsr")) == 1

    await wait_until(dead)
    [letter] = await drain_queue(url, dsr.names.dlq("dsr"))
    assert (letter.headers[H_ERROR_TYPE], letter.headers[H_ERROR]) == (
        "rule_violated",
        "an extension must be decided before the due date",
    )
    assert sql(db, "SELECT extended FROM dsr_requests WHERE request_id = 'r-late'") == [(0,)]

    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    report = await run_all(worker, dsr.store, dsr.outboxes, datetime.now(UTC))
    assert report.flagged == 1
    assert sql(db, "SELECT deadline_flag FROM dsr_requests WHERE request_id = 'r-late'") == [
        ("overdue",)
    ]
    figures = await worker.gauges(dsr.store, datetime.now(UTC))
    assert figures == {"requests_open": 2.0, "requests_due_soon": 0.0, "requests_overdue": 1.0}
    await dsr._refresh_figures()
    sample = dsr.metrics.registry.get_sample_value(
        "privacyops_worker_state", {"worker": "dsr", "name": "requests_overdue"}
    )
    assert sample == 1.0


async def test_planted_personal_data_stays_out_of_logs_and_headers(
    dsr: Service, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    bad = json.loads(
        request(
            "r-bad",
            "rectification",
            details={"corrections": [{"field": "debtors.last_name", "value": f"{EMAIL} {PHONE}"}]},
        ).model_dump_json()
    )
    bad["payload"]["subject"]["id_number"] = BAD_ID  # fails the check digit
    bad["payload"]["subject"]["email"] = EMAIL
    await publisher.publish_raw(json.dumps(bad).encode(), "dsr.requested")
    await publisher.publish(
        request(
            "r-ok",
            "rectification",
            id_number=SA_ID,
            details={"corrections": [{"field": "debtors.first_name", "value": f"Thandi {PHONE}"}]},
        )
    )
    url = settings.amqp_url.get_secret_value()

    async def dead() -> bool:
        return await queue_depth(url, dsr.names.dlq("dsr")) == 1

    await wait_until(dead)
    [letter] = await drain_queue(url, dsr.names.dlq("dsr"))
    assert await answered(settings.db_path, "r-ok") == "completed"
    text = json.dumps(letter.headers, default=str) + log_output.getvalue()
    for planted in (EMAIL, PHONE, SA_ID, BAD_ID, "82 555 0199"):
        assert planted not in text
    assert any(line["event"] == "dsr_answered" for line in log_lines(log_output))
