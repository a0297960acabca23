"""The DSR worker end to end: real RabbitMQ, real SQLite file, seeded platform data."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from config.settings import Settings
from config.tenants import DEFAULT_PATH as DEFAULT_TENANTS
from config.tenants import load as load_tenants
from infra.headers import H_ERROR, H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.dsr import (
    DsrExtended,
    DsrExtendedPayload,
    Regime,
    RequestKind,
)
from messages.notices import NoticeKind
from messages.registry import decode
from tests.support.dsr import (
    BAD_ID,
    DATAMAP,
    EMAIL,
    NOW,
    PHONE,
    SA_ID,
    answered,
    keys_of,
    notices,
    request,
    snapshot,
    sql,
    verified,
)
from tests.support.helpers import (
    contactable,
    drain_queue,
    log_lines,
    queue_depth,
    wait_until,
)
from workers.dsr import DsrWorker, package
from workers.dsr.rules import due_on, local_date
from workers.dsr.sweeps import run_all
from workers.notifier.templates import Renderer


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
    await publisher.publish(verified("r-erase"))
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
        "accounts:acc-1001",
        "payments:acc-1001",
        "communications",
        "notes",
    }
    assert "open debt" in held["accounts:acc-1001"].lower()
    assert sql(db, "SELECT DISTINCT channel, purpose, basis FROM suppression_list") == [
        ("*", "*", "NCR reg 58(4): opt-out kept 3 years after erasure")
    ]
    assert sql(db, "SELECT count(*) FROM suppression_list") == [(3,)]  # subject, e-mail, phone
    assert EMAIL not in repr(sql(db, "SELECT * FROM suppression_list"))
    [(_, reason)] = sql(
        db,
        "SELECT to_status, reason FROM dsr_transitions WHERE request_id ="
        " 'r-erase' AND to_status = 'partially_completed'",
    )
    assert "accounts:acc-1001 (open_debt)" in reason
    assert not await contactable(dsr.store, settings, "acme", "debtor-open", "email")
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
    [(anon, account, amount, bank)] = sql(
        db,
        "SELECT subject_ref, account_id, amount_cents, bank_reference"
        " FROM payments WHERE subject_ref LIKE 'anon-%'",
    )
    assert anon.startswith("anon-")
    assert account.startswith("anon-")
    assert anon != account
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
    assert await contactable(dsr.store, settings, "acme", "debtor-open", "email")
    await publisher.publish(request("r-stop", "restriction", verified=False))
    assert await answered(db, "r-stop") == "completed"
    assert not await contactable(dsr.store, settings, "acme", "debtor-open", "email")

    await publisher.publish(
        request("r-lift", "restriction", details={"lift": True}, verified=False)
    )
    assert await answered(db, "r-lift") == "awaiting_verification"
    await publisher.publish(verified("r-lift"))
    assert await answered(db, "r-lift", ("completed",)) == "completed"
    assert "restriction_lifting" in [k for k, _ in notices(db, "r-lift")]
    assert not await contactable(dsr.store, settings, "acme", "debtor-open", "email")  # told first
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    report = await run_all(
        worker, dsr.store, dsr.outboxes, datetime.now(UTC) + timedelta(seconds=1)
    )
    assert report.lifted == 1
    assert await contactable(dsr.store, settings, "acme", "debtor-open", "email")


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
    received = local_date(NOW, ZoneInfo("Africa/Johannesburg"))
    expected = due_on(received, Regime.POPIA, RequestKind.ACCESS) + timedelta(days=30)
    assert due == expected.isoformat()  # PAIA s57 for access
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


async def test_the_final_answer_says_what_was_done_kept_and_why_and_how_to_complain(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    await publisher.publish(request("r-why", "erasure"))
    assert await answered(db, "r-why") == "partially_completed"
    context = dict(notices(db, "r-why"))["dsr_completed"]
    assert any("Deleted or de-identified" in s for s in context["done"])
    kept = {item["what"]: item for item in context["kept"]}
    account = kept["debts under collection (account acc-1001)"]
    assert account["basis"].startswith("An open debt is always a legal hold")
    assert account["until"] == "while the debt is open"
    directory = load_tenants(DEFAULT_TENANTS)
    email = Renderer().email(
        NoticeKind.DSR_COMPLETED, directory.tenants["acme"], directory.regulator, context
    )
    assert "An open debt is always a legal hold" in email.text
    assert "Kept until: while the debt is open" in email.text
    assert "Information Regulator" in email.text


async def test_a_popia_access_request_past_its_deadline_is_answered_as_deemed_refused(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    late = request("r-paia-late", "access", verified=False, received_at=NOW - timedelta(days=40))
    await publisher.publish(late)
    assert await answered(db, "r-paia-late") == "awaiting_verification"
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    await run_all(worker, dsr.store, dsr.outboxes, datetime.now(UTC))
    deemed = dict(notices(db, "r-paia-late"))["dsr_deemed_refused"]
    assert deemed["due_on"] < NOW.date().isoformat()
    [(reason,)] = sql(
        db,
        "SELECT reason FROM dsr_transitions WHERE request_id = 'r-paia-late'"
        " AND reason LIKE 'deemed refused%'",
    )
    assert "PAIA s58" in reason
    await run_all(worker, dsr.store, dsr.outboxes, datetime.now(UTC))  # told once
    assert [k for k, _ in notices(db, "r-paia-late")].count("dsr_deemed_refused") == 1
