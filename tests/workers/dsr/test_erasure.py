"""Erasure end to end (docs/rules.md "Erasure and retention holds"): real broker and store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.registry import decode
from tests.support.dsr import EMAIL, answered, plant, request, sql
from tests.support.helpers import consent_changed, contactable, drain_queue, wait_until


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
    plant(db, "acme", "debtor-again", account="closed", closed="2015-06-30", account_id="acc-9")
    with sqlite3.connect(db) as conn:  # a new reference, the same e-mail address
        conn.execute("DELETE FROM consent_state WHERE subject_ref = 'debtor-again'")
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
