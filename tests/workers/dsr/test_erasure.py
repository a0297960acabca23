"""Erasure end to end (docs/rules.md "Erasure and retention holds"): real broker and store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from random import Random

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from infra.runtime.worker import Effects
from messages.registry import decode
from tests.support.db import connect
from tests.support.dsr import (
    DATAMAP,
    EMAIL,
    add_account,
    answered,
    execute,
    off_loop,
    plant,
    request,
    sql,
)
from tests.support.helpers import consent_changed, contactable, drain_queue, wait_until
from workers.consent import may_ask
from workers.dsr import DsrWorker
from workers.dsr.sweeps import run_all
from workers.platform.keys import digest_key
from workers.platform.optouts import SUPPRESSION_UPSERT
from workers.platform.seed import sa_id_number

OTHER_ID = sa_id_number(Random(7), date(1977, 7, 7))


async def consent_applied(settings: Settings, n: int) -> None:
    async def done() -> bool:
        rows = sql(settings.db_path, "SELECT count(*) FROM inbox WHERE worker = 'consent'")
        return rows[0][0] >= n

    await wait_until(done)


async def test_an_older_grant_arriving_after_the_erasure_changes_nothing(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    await publisher.publish(request("r-forget", "erasure", "debtor-gone"))
    assert await answered(db, "r-forget") == "completed"
    before_erasure = datetime.now(UTC) - timedelta(days=1)
    await off_loop(
        plant, db, "acme", "debtor-again", account="closed", closed="2015-06-30", account_id="acc-9"
    )  # a new reference, the same e-mail address
    await off_loop(execute, db, "DELETE FROM consent_state WHERE subject_ref = 'debtor-again'")
    await publisher.publish(consent_changed("debtor-gone", occurred_at=before_erasure))
    await publisher.publish(consent_changed("debtor-again", occurred_at=before_erasure))
    await consent_applied(settings, 2)

    assert sql(db, "SELECT count(*) FROM consent_state WHERE status = 'granted'") == [(0,)]
    assert sql(
        db,
        "SELECT subject_ref, outcome FROM consent_history WHERE status = 'granted' ORDER BY 1",
    ) == [("debtor-again", "barred"), ("debtor-gone", "barred")]
    assert not await contactable(dsr.store, settings, "acme", "debtor-gone", "email")
    assert not await contactable(dsr.store, settings, "acme", "debtor-again", "email")
    await dsr.outboxes.idle()
    parked = await drain_queue(settings.amqp_url.get_secret_value(), dsr.names.unrouted)
    sent = [decode(m.body) for m in parked]
    assert not [e for e in sent if e.type == "consent.updated"]
    [erased] = [e for e in sent if e.type == "subject.erased"]
    assert erased.payload.keep_suppressing is True
    assert set(erased.payload.suppressed_channels) == {"email", "sms", "phone", "whatsapp", "post"}
    assert EMAIL not in repr(sql(db, "SELECT * FROM suppression_list"))

    # a consent given after the erasure is a new consent
    await publisher.publish(consent_changed("debtor-gone", occurred_at=datetime.now(UTC)))
    await consent_applied(settings, 3)
    assert await contactable(dsr.store, settings, "acme", "debtor-gone", "email")


def held_scopes(db: Path, subject: str, tenant: str = "bravo") -> dict[str, str]:
    rows = sql(
        db,
        "SELECT scope, basis FROM restrictions WHERE tenant_id = ? AND subject_ref = ?",
        tenant,
        subject,
    )
    return {str(scope): str(basis) for scope, basis in rows}


async def test_holds_apply_per_record_not_per_subject(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path

    def plant_two_debts() -> None:  # one open, one written off and prescribed long ago
        plant(
            db, "bravo", "debtor-mixed", account="open", account_id="acc-open", id_number=OTHER_ID
        )
        with connect(db, timeout=30) as conn:
            add_account(
                conn,
                "bravo",
                "debtor-mixed",
                "acc-old",
                "written_off",
                paid="2016-01-01",
                note="Agreed to pay the old debt",
            )

    await off_loop(plant_two_debts)
    await publisher.publish(request("r-mixed", "erasure", "debtor-mixed", tenant="bravo"))
    assert await answered(db, "r-mixed") == "partially_completed"

    def of(table: str, account: str) -> int:
        return int(sql(db, f"SELECT count(*) FROM {table} WHERE account_id = ?", account)[0][0])

    assert (of("accounts", "acc-old"), of("payments", "acc-old"), of("notes", "acc-old")) == (
        0,
        0,
        0,
    )
    assert (of("accounts", "acc-open"), of("payments", "acc-open")) == (1, 1)
    assert sql(db, "SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-mixed'") == [(1,)]
    scopes = held_scopes(db, "debtor-mixed")
    assert {"accounts:acc-open", "payments:acc-open", "debtors"} <= set(scopes)
    assert not [s for s in scopes if s.endswith("acc-old")]


async def test_an_unlisted_debt_type_and_a_judgment_debt_keep_the_debtor_until_they_prescribe(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    a_year_ago = (datetime.now(UTC) - timedelta(days=365)).date().isoformat()
    cases = [
        ("debtor-card", "acc-card", "credit_card", None),
        ("debtor-judged", "acc-judged", "judgment", "2016-03-03"),
    ]

    def plant_cases() -> None:
        for subject, account, debt_type, judgment in cases:
            plant(
                db,
                "bravo",
                subject,
                account="closed",
                closed="2015-01-01",
                account_id="acc-x-" + subject,
                id_number=OTHER_ID,
            )
            with connect(db, timeout=30) as conn:
                conn.execute("DELETE FROM accounts WHERE subject_ref = ?", (subject,))
                add_account(
                    conn,
                    "bravo",
                    subject,
                    account,
                    "written_off",
                    paid=a_year_ago if judgment is None else "2015-05-05",
                    debt_type=debt_type,
                    judgment_on=judgment,
                )

    await off_loop(plant_cases)
    for subject, *_ in cases:
        await publisher.publish(request(f"r-{subject}", "erasure", subject, tenant="bravo"))
    for subject, *_ in cases:
        assert await answered(db, f"r-{subject}") == "partially_completed"
        assert sql(db, "SELECT count(*) FROM debtors WHERE subject_ref = ?", subject) == [(1,)]
    card = sql(
        db,
        "SELECT basis, until FROM restrictions WHERE subject_ref = 'debtor-card'"
        " AND scope = 'accounts:acc-card'",
    )
    assert card[0][0].startswith("Prescription Act")
    judged = sql(
        db,
        "SELECT until FROM restrictions WHERE subject_ref = 'debtor-judged'"
        " AND scope = 'accounts:acc-judged'",
    )
    assert judged == [("2046-03-03",)]  # 30 years from the judgment


async def test_no_de_identified_row_leads_back_to_the_subject(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    gone_id = sql(db, "SELECT id_number FROM debtors WHERE subject_ref = 'debtor-gone'")[0][0]
    links = ["debtor-gone", "acc-1002", "REF-acc-1002", "BANK-acc-1002", gone_id]
    await publisher.publish(request("r-unlink", "erasure", "debtor-gone"))
    assert await answered(db, "r-unlink") == "completed"
    assert sql(db, "SELECT count(*) FROM payments WHERE subject_ref LIKE 'anon-%'") == [(1,)]
    for table in DATAMAP.tables:
        for row in sql(db, f"SELECT * FROM {table}"):
            for value in row:
                assert not any(link in str(value) for link in links), (table, row)


async def test_erasure_forgets_what_privacyops_itself_keeps_about_the_subject(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    planted, grounds = "Planted Value 777", "my neighbour Sipho told me"
    refused = {"corrections": [{"field": "accounts.balance_cents", "value": planted}]}
    await publisher.publish(request("r-note", "rectification", "debtor-gone", details=refused))
    await publisher.publish(request("r-copy", "access", "debtor-gone"))
    objection = {"purposes": ["profiling"], "grounds": grounds}
    await publisher.publish(request("r-obj", "objection", "debtor-gone", details=objection))
    for rid in ("r-note", "r-copy", "r-obj"):
        assert await answered(db, rid) in ("refused", "completed")
    [(package_path,)] = sql(db, "SELECT path FROM dsr_packages WHERE request_id = 'r-copy'")
    assert Path(package_path).exists()

    await publisher.publish(request("r-bye", "erasure", "debtor-gone"))
    assert await answered(db, "r-bye") == "completed"
    # the notifier delivers what was still queued
    await off_loop(execute, db, "UPDATE notification_outbox SET status = 'sent'")
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    report = await run_all(worker, dsr.store, dsr.outboxes, datetime.now(UTC))
    assert report.packages_deleted == 1
    assert report.notices_reduced >= 4

    assert not Path(package_path).exists()
    own = [
        "dsr_requests",
        "dsr_correction_notes",
        "dsr_packages",
        "processing_flags",
        "restrictions",
        "notification_outbox",
        "erasure_followups",
    ]
    for table in own:
        text = repr(sql(db, f"SELECT * FROM {table}"))
        for value in ("debtor-gone", planted, grounds):
            assert value not in text, (table, value)
    refs = {r for (r,) in sql(db, "SELECT DISTINCT subject_ref FROM dsr_requests")}
    assert len(refs) == 1
    assert next(iter(refs)).startswith("erased-")
    [(value,)] = sql(db, "SELECT requested_value FROM dsr_correction_notes")
    assert value.startswith("digest:")
    assert {c for (c,) in sql(db, "SELECT DISTINCT context FROM notification_outbox")} == {
        '{"erased": true}'
    }


async def test_a_refusal_when_asked_outlives_the_erasure(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    """POPIA s69(2)(a): the consent history goes with the erasure, "never ask" stays."""
    db = settings.db_path
    asked = datetime.now(UTC) - timedelta(days=1)
    await publisher.publish(
        consent_changed("debtor-gone", status="refused", source="call_centre", occurred_at=asked)
    )
    await consent_applied(settings, 1)
    await publisher.publish(request("r-refuser", "erasure", "debtor-gone"))
    assert await answered(db, "r-refuser") == "completed"

    assert sql(db, "SELECT count(*) FROM consent_history WHERE subject_ref = 'debtor-gone'") == [
        (0,)
    ]
    assert sql(db, "SELECT DISTINCT never_ask FROM suppression_list") == [(1,)]
    key = digest_key(settings)
    assert not await may_ask(dsr.store, "acme", "debtor-gone", digest_key=key)


async def test_a_refused_service_message_is_not_kept_as_never_ask(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    """POPIA s69(2)(a) concerns marketing: a refusal of payment reminders (a service purpose)
    goes with the history and does not bar asking for marketing consent later."""
    db = settings.db_path
    asked = datetime.now(UTC) - timedelta(days=1)
    await publisher.publish(
        consent_changed(
            "debtor-gone",
            status="refused",
            source="call_centre",
            occurred_at=asked,
            purpose="payment_reminders",
        )
    )
    await consent_applied(settings, 1)
    await publisher.publish(request("r-service", "erasure", "debtor-gone"))
    assert await answered(db, "r-service") == "completed"
    assert sql(db, "SELECT DISTINCT never_ask FROM suppression_list") in ([], [(0,)])
    key = digest_key(settings)
    assert await may_ask(dsr.store, "acme", "debtor-gone", digest_key=key)


async def test_an_opt_out_kept_by_a_late_night_erasure_counts_its_years_from_the_local_date(
    dsr: Service, settings: Settings
) -> None:
    """NCR reg 58(4): 3 years from the erasure's South African date, not the UTC date."""
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    assert worker.runner is not None
    late_night = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)  # 01:30 SAST on 2 March
    effects = Effects.standalone("dsr", "acme", actor="test", now=late_night)
    async with dsr.store.transaction() as tx:
        await worker.runner._keep_opt_outs(tx, effects, "debtor-gone", [], late_night)
    expiries = {params[-1] for query, params in effects.writes if query == SUPPRESSION_UPSERT}
    assert expiries == {"2029-03-02"}  # not 1 March 2029: that is a day short of 3 years
