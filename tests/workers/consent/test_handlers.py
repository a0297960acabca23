"""The consent worker end to end: real RabbitMQ, real SQLite file."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.registry import decode
from tests.support.db import connect
from tests.support.helpers import (
    ServiceFactory,
    consent_changed,
    contactable,
    drain_queue,
    wait_until,
)
from workers.consent import may_ask
from workers.platform.keys import digest_key

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def count(db: Path, table: str) -> int:
    return int(rows(db, f"SELECT count(*) FROM {table}")[0][0])


async def until_inbox(settings: Settings, n: int) -> None:
    async def done() -> bool:
        return count(settings.db_path, "inbox") >= n

    await wait_until(done)


async def test_publish_then_applied(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service()
    message = consent_changed("debtor-1", status="granted", channel="sms", occurred_at=T0)
    await publisher.publish(message)
    await until_inbox(settings, 1)

    db = settings.db_path
    assert rows(db, "SELECT tenant_id, subject_ref, channel, status FROM consent_state") == [
        ("acme", "debtor-1", "sms", "granted")
    ]
    history = rows(db, "SELECT source, evidence, outcome FROM consent_history")
    assert history[0][0] == "web_form"
    assert json.loads(history[0][1])["reference"] == "form-1"
    assert history[0][2] == "applied"
    audit = rows(db, "SELECT action, actor, subject_ref, message_id, attempt FROM audit_log")
    assert audit == [("consent_applied", "worker:consent", "debtor-1", str(message.message_id), 1)]
    notices = rows(db, "SELECT kind, channel, subject_ref FROM notification_outbox")
    assert notices == [("consent_confirmation", "sms", "debtor-1")]
    assert await contactable(service.store, settings, "acme", "debtor-1", "sms")
    assert not await contactable(service.store, settings, "acme", "debtor-1", "email")
    assert not await contactable(service.store, settings, "other", "debtor-1", "sms")

    # consent.updated went downstream with confirms (parked: nothing is bound yet)
    await service.outboxes.idle()
    url = settings.amqp_url.get_secret_value()
    parked = await drain_queue(url, service.names.unrouted)
    assert len(parked) == 1
    updated = decode(parked[0].body)
    assert updated.type == "consent.updated"
    assert updated.payload.cause_message_id == message.message_id
    assert updated.payload.previous_status is None
    assert rows(db, "SELECT count(*) FROM event_outbox WHERE published_at IS NULL") == [(0,)]


async def test_same_message_twice_has_one_effect(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    await start_service()
    message = consent_changed("debtor-2")
    await publisher.publish(message)
    await until_inbox(settings, 1)
    await publisher.publish(message)
    later = consent_changed("debtor-3")
    await publisher.publish(later)
    await until_inbox(settings, 2)

    db = settings.db_path
    assert count(db, "consent_history") == 2
    assert count(db, "audit_log") == 2
    assert count(db, "notification_outbox") == 2
    assert count(db, "event_outbox") == 2


async def test_shuffled_events_end_in_the_newest(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service()
    events = [
        consent_changed(
            "debtor-4",
            status=random.choice(["granted", "withdrawn"]),
            occurred_at=T0 + timedelta(minutes=i),
            reference=f"event-{i}",
        )
        for i in range(100)
    ]
    newest = events[-1]
    shuffled = events[:]
    random.shuffle(shuffled)
    for event in shuffled:
        await publisher.publish(event)
    await until_inbox(settings, 100)

    db = settings.db_path
    state = rows(db, "SELECT status, effective_at, message_id FROM consent_state")
    assert state == [
        (
            newest.payload.status.value,
            newest.occurred_at.isoformat(timespec="microseconds"),
            str(newest.message_id),
        )
    ]
    assert count(db, "consent_history") == 100
    expected = newest.payload.status.value == "granted"
    assert await contactable(service.store, settings, "acme", "debtor-4", "email") is expected


async def test_equal_timestamps_withdrawal_wins(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    await start_service()
    withdrawn = consent_changed("debtor-5", status="withdrawn", occurred_at=T0)
    granted = consent_changed("debtor-5", status="granted", occurred_at=T0)
    await publisher.publish(withdrawn)
    await publisher.publish(granted)
    other_way = [
        consent_changed("debtor-6", status="granted", occurred_at=T0),
        consent_changed("debtor-6", status="withdrawn", occurred_at=T0),
    ]
    for event in other_way:
        await publisher.publish(event)
    await until_inbox(settings, 4)

    state = rows(settings.db_path, "SELECT subject_ref, status FROM consent_state ORDER BY 1")
    assert state == [("debtor-5", "withdrawn"), ("debtor-6", "withdrawn")]
    outcomes = rows(
        settings.db_path,
        "SELECT outcome FROM consent_history WHERE subject_ref = 'debtor-5' ORDER BY id",
    )
    assert outcomes == [("applied",), ("superseded",)]


async def test_tenants_and_channels_are_separate(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service()
    await publisher.publish(consent_changed("debtor-7", tenant_id="acme", channel="email"))
    await publisher.publish(
        consent_changed("debtor-7", tenant_id="bravo", channel="email", status="withdrawn")
    )
    await publisher.publish(
        consent_changed("debtor-7", tenant_id="acme", channel="sms", status="withdrawn")
    )
    await until_inbox(settings, 3)

    assert await contactable(service.store, settings, "acme", "debtor-7", "email")
    assert not await contactable(service.store, settings, "bravo", "debtor-7", "email")
    assert not await contactable(service.store, settings, "acme", "debtor-7", "sms")


async def test_state_survives_a_restart(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    first = await start_service()
    await publisher.publish(consent_changed("debtor-8", status="granted", occurred_at=T0))
    await until_inbox(settings, 1)
    await first.stop()

    second: Service = await start_service()
    older = consent_changed("debtor-8", status="withdrawn", occurred_at=T0 - timedelta(days=1))
    await publisher.publish(older)
    await until_inbox(settings, 2)
    assert await contactable(second.store, settings, "acme", "debtor-8", "email")


async def test_a_grant_for_another_purpose_never_overrides_a_marketing_withdrawal(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service()
    await publisher.publish(consent_changed("debtor-9", status="withdrawn", occurred_at=T0))
    await until_inbox(settings, 1)
    later = T0 + timedelta(hours=1)
    await publisher.publish(
        consent_changed("debtor-9", purpose="service_messages", occurred_at=later)
    )
    await until_inbox(settings, 2)

    state = rows(settings.db_path, "SELECT purpose, status FROM consent_state ORDER BY purpose")
    assert state == [("direct_marketing", "withdrawn"), ("service_messages", "granted")]
    assert not await contactable(service.store, settings, "acme", "debtor-9", "email")
    assert await contactable(
        service.store, settings, "acme", "debtor-9", "email", "service_messages"
    )


async def test_a_refusal_when_asked_is_recorded_as_never_ask(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service()
    await publisher.publish(
        consent_changed("debtor-10", status="refused", channel="sms", source="call_centre")
    )
    await publisher.publish(consent_changed("debtor-11", status="withdrawn", channel="sms"))
    await until_inbox(settings, 2)

    assert rows(settings.db_path, "SELECT subject_ref, status FROM consent_state ORDER BY 1") == [
        ("debtor-10", "refused"),
        ("debtor-11", "withdrawn"),
    ]
    key = digest_key(settings)
    assert not await may_ask(service.store, "acme", "debtor-10", digest_key=key)
    assert await may_ask(service.store, "acme", "debtor-11", digest_key=key)
    assert not await contactable(service.store, settings, "acme", "debtor-10", "sms")
    await service.outboxes.idle()
    parked = await drain_queue(settings.amqp_url.get_secret_value(), service.names.unrouted)
    statuses = {decode(m.body).payload.subject_ref: decode(m.body).payload.status for m in parked}
    assert statuses == {"debtor-10": "refused", "debtor-11": "withdrawn"}
