"""Restriction and objection reach recipients and every check (docs/rules.md "Restriction",
"Objection"): real broker and store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.envelope import Envelope
from messages.registry import decode
from tests.support.dsr import NOW, answered, request, sql
from tests.support.helpers import consent_changed, contactable, drain_queue, wait_until
from workers.dsr import DsrWorker
from workers.dsr.sweeps import run_all
from workers.platform.tables import usable_contact


async def parked(service: Service, settings: Settings) -> list[Envelope]:
    await service.outboxes.idle()
    taken = await drain_queue(settings.amqp_url.get_secret_value(), service.names.unrouted)
    return [decode(m.body) for m in taken]


async def usable(service: Service, subject: str, purpose: str) -> Any:
    async with service.store.transaction() as tx:
        return await usable_contact(tx, "acme", subject, "email", purpose)


async def consent_count(settings: Settings, n: int) -> None:
    async def done() -> bool:
        rows = sql(settings.db_path, "SELECT count(*) FROM inbox WHERE worker = 'consent'")
        return rows[0][0] >= n

    await wait_until(done)


async def test_restriction_and_its_lifting_reach_the_recipients(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    await publisher.publish(
        request("r-hold", "restriction", verified=False, details={"categories": ["contact"]})
    )
    assert await answered(db, "r-hold") == "completed"
    [restricted] = [e for e in await parked(dsr, settings) if e.type == "subject.restricted"]
    assert restricted.payload.scopes == ["contact"]
    assert "contact_points" in restricted.payload.tables
    assert "messaging providers (SMS gateway, e-mail relay)" in restricted.payload.recipients
    assert await usable(dsr, "debtor-open", "direct_marketing") is None

    await publisher.publish(request("r-unhold", "restriction", details={"lift": True}))
    assert await answered(db, "r-unhold") == "completed"
    worker = dsr.workers[0]
    assert isinstance(worker, DsrWorker)
    await run_all(worker, dsr.store, dsr.outboxes, datetime.now(UTC) + timedelta(seconds=1))
    [lifted] = [e for e in await parked(dsr, settings) if e.type == "subject.restriction_lifted"]
    assert lifted.payload.scopes == ["contact"]
    assert lifted.payload.recipients == restricted.payload.recipients
    assert await usable(dsr, "debtor-open", "direct_marketing") is not None


async def test_an_objection_to_other_processing_stops_that_purpose_everywhere(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    await publisher.publish(
        consent_changed("debtor-open", purpose="profiling", occurred_at=NOW - timedelta(days=3))
    )
    await consent_count(settings, 1)
    assert await contactable(dsr.store, settings, "acme", "debtor-open", "email", "profiling")
    details = {"purposes": ["profiling"], "grounds": "I do not want to be profiled"}
    await publisher.publish(request("r-noprofile", "objection", details=details))
    assert await answered(db, "r-noprofile") == "completed"

    assert not await contactable(dsr.store, settings, "acme", "debtor-open", "email", "profiling")
    assert await usable(dsr, "debtor-open", "profiling") is None
    assert await usable(dsr, "debtor-open", "service_messages") is not None
    [objected] = [e for e in await parked(dsr, settings) if e.type == "subject.objected"]
    assert objected.payload.outcomes == {"profiling": "processing_stopped"}
    assert "the creditor (account holder)" in objected.payload.recipients


async def test_an_objection_to_direct_marketing_covers_every_marketing_purpose(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    before = NOW - timedelta(days=2)
    await publisher.publish(
        consent_changed("debtor-open", channel="sms", purpose="partner_offers", occurred_at=before)
    )
    await publisher.publish(
        consent_changed("debtor-open", purpose="service_messages", occurred_at=before)
    )
    await consent_count(settings, 2)
    await publisher.publish(
        request("r-nomarketing", "objection", details={"purposes": ["direct_marketing"]})
    )
    assert await answered(db, "r-nomarketing") == "completed"
    late = NOW - timedelta(days=1)  # dated before the objection, arriving after it
    await publisher.publish(
        consent_changed("debtor-open", channel="whatsapp", purpose="newsletters", occurred_at=late)
    )
    await consent_count(settings, 3)

    for channel, purpose in [("sms", "partner_offers"), ("whatsapp", "newsletters")]:
        assert not await contactable(dsr.store, settings, "acme", "debtor-open", channel, purpose)
    assert await contactable(
        dsr.store, settings, "acme", "debtor-open", "email", "service_messages"
    )
    assert sql(
        db,
        "SELECT outcome FROM consent_history WHERE purpose = 'newsletters'",
    ) == [("barred",)]
    assert sql(
        db,
        "SELECT status FROM consent_state WHERE tenant_id = 'acme' AND subject_ref ="
        " 'debtor-open' AND channel = 'sms' AND purpose = 'partner_offers'",
    ) == [("withdrawn",)]
