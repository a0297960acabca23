"""The security worker end to end: real RabbitMQ, real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from infra.headers import H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.errors import RuleViolation
from messages.registry import encode
from messages.security import IncidentStatus, SecurityAlert, SecurityAlertPayload
from tests.support.db import connect
from tests.support.helpers import (
    ServiceFactory,
    drain_queue,
    log_lines,
    migrated_store,
    queue_depth,
    run_cli,
    wait_until,
)
from workers.notifier import NotifierWorker
from workers.security import SecurityWorker, admin

EMAIL, PHONE, SA_ID = "thandi.nkosi@example.co.za", "+27 82 555 0199", "8501015800084"
PLANTED = (EMAIL, PHONE, SA_ID, "82 555 0199", "555 0199", "Thandi")
S22_5 = ("consequences", "measures", "subject_actions", "unauthorised_party")


def sql(path: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    with connect(path) as conn:
        return conn.execute(query, params).fetchall()


def one(path: Path, query: str, *params: object) -> Any:
    return sql(path, query, *params)[0][0]


def alert(alert_id: str, tenant: str = "acme", **payload: Any) -> SecurityAlert:
    values: dict[str, Any] = {
        "alert_id": alert_id,
        "source": "auth_service",
        "category": "credential_stuffing",
        "severity_hint": "high",
        "detected_at": datetime.now(UTC) - timedelta(minutes=5),
        "target": {"system": "debtor-portal", "account_ids": ["acc-1", "acc-2"]},
        "personal_data_involved": "suspected",
        "data_categories": ["identity", "financial"],
        "description": "Login burst against the portal",
    }
    values.update(payload)
    return SecurityAlert(tenant_id=tenant, payload=SecurityAlertPayload.model_validate(values))


def document(stdout: str) -> Any:
    """The command's indented JSON output; audit events are logged as JSON lines on stdout."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line in ("{", "["))
    return json.loads("\n".join(lines[start:]))


async def publish_all(publisher: Publisher, messages: list[SecurityAlert]) -> None:
    for start in range(0, len(messages), 200):
        await asyncio.gather(*(publisher.publish(m) for m in messages[start : start + 200]))


async def settled(path: Path, count: int) -> None:
    async def done() -> bool:
        return one(path, "SELECT count(*) FROM inbox WHERE worker = 'security'") >= count

    await wait_until(done, within=60)


def notices(path: Path, kind: str | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
    rows = sql(
        path,
        "SELECT tenant_id, subject_ref, kind, context FROM notification_outbox"
        " WHERE (CAST(? AS TEXT) IS NULL OR kind = ?) ORDER BY created_at, subject_ref",
        kind,
        kind,
    )
    return [(t, s, k, json.loads(c)) for t, s, k, c in rows]


def events(path: Path) -> Counter[str]:
    return Counter(r[0] for r in sql(path, "SELECT routing_key FROM event_outbox"))


@pytest.fixture
async def security(settings: Settings, start_service: ServiceFactory) -> Service:
    return await start_service([SecurityWorker(settings)])


async def test_a_burst_of_duplicates_makes_one_incident_and_one_set_of_notices(
    security: Service, publisher: Publisher, settings: Settings
) -> None:
    subjects = ["debtor-1", "debtor-2", "debtor-3"]
    burst = [alert(f"cs-{n}", affected_subjects=subjects) for n in range(1_000)]
    await publish_all(publisher, burst)
    await settled(settings.db_path, 1_000)

    path = settings.db_path
    [(incident_id, count, status)] = sql(
        path, "SELECT incident_id, alert_count, status FROM security_incidents"
    )
    assert count == 1_000
    assert status == IncidentStatus.COMPROMISE_ALLEGED
    assert one(path, "SELECT count(*) FROM security_alerts WHERE incident_id = ?", incident_id) == (
        1_000
    )
    joined = "SELECT count(*) FROM security_timeline WHERE change = 'alert_joined'"
    assert one(path, joined) == 999
    assert sorted(s for _, s, _, _ in notices(path)) == subjects
    assert {k for _, _, k, _ in notices(path)} == {"breach_notice"}
    assert events(path) == {
        "incident.opened": 1,
        "incident.compromise": 1,
        "incident.escalated": 1,
        "account.lock": 2,
    }
    assert one(path, "SELECT count(*) FROM security_reports") == 1


async def test_the_same_alert_for_two_tenants_makes_two_incidents(
    security: Service, publisher: Publisher, settings: Settings
) -> None:
    await publish_all(
        publisher,
        [
            alert("shared-1", "acme", affected_subjects=["debtor-1"]),
            alert("shared-1", "bravo", affected_subjects=["debtor-1"]),
        ],
    )
    await settled(settings.db_path, 2)
    rows = sql(settings.db_path, "SELECT tenant_id, incident_id FROM security_incidents")
    assert sorted(t for t, _ in rows) == ["acme", "bravo"]
    assert len({i for _, i in rows}) == 2
    worker = security.workers[0]
    figures = await worker.gauges(security.store, datetime.now(UTC))
    assert figures == {"incidents_open": 2.0, "reports_overdue": 0.0}
    assert sorted((t, s) for t, s, _, _ in notices(settings.db_path)) == [
        ("acme", "debtor-1"),
        ("bravo", "debtor-1"),
    ]


async def test_fifty_subjects_are_told_once_also_when_the_alert_comes_again(
    security: Service, publisher: Publisher, settings: Settings
) -> None:
    subjects = [f"debtor-{n:03d}" for n in range(50)]
    first = alert(
        "exfil-1",
        category="data_exfiltration",
        affected_subjects=subjects,
        unauthorised_party="a former contractor",
    )
    await publisher.publish(first)
    await settled(settings.db_path, 1)
    await publisher.publish(first)  # the same message again: the inbox absorbs it
    again = SecurityAlert(tenant_id="acme", payload=first.payload)  # new message_id, same alert
    assert again.message_id != first.message_id
    await publisher.publish(again)
    await settled(settings.db_path, 2)

    path = settings.db_path
    told = notices(path)
    assert Counter(s for _, s, _, _ in told) == dict.fromkeys(subjects, 1)
    for _, _, kind, context in told:
        assert kind == "breach_notice"
        assert all(context[part] for part in S22_5)
        assert context["unauthorised_party"] == "a former contractor"
    assert one(path, "SELECT alert_count FROM security_incidents") == 1
    audit = "SELECT count(*) FROM audit_log WHERE action = 'security_alert_repeated'"
    assert one(path, audit) == 1

    # a later alert naming 5 more subjects: only they get a first notice
    more = alert(
        "exfil-2",
        category="data_exfiltration",
        affected_subjects=[*subjects[:10], "debtor-new-1", "debtor-new-2"],
    )
    await publisher.publish(more)
    await settled(path, 3)
    assert len(notices(path)) == 52

    # confirming is a new phase: an update to each subject already told, not a copy
    incident_id = one(path, "SELECT incident_id FROM security_incidents")
    await confirm(settings, incident_id)
    updates = notices(path, "breach_update")
    assert sorted(s for _, s, _, _ in updates) == sorted(
        [*subjects, "debtor-new-1", "debtor-new-2"]
    )
    for _, _, _, context in updates:
        assert all(context[part] for part in S22_5)
        assert "confirmed" in context["update"]
    await confirm(settings, incident_id)  # twice: nothing more
    assert len(notices(path)) == 104
    assert one(path, "SELECT compromise FROM security_reports") == "confirmed"
    actor = "SELECT actor FROM audit_log WHERE action = 'incident_confirmed'"
    assert one(path, actor) == f"operator:{settings.operator}"


async def confirm(settings: Settings, incident_id: str) -> None:
    async with migrated_store(settings) as store:
        await admin.confirm(store, None, incident_id, settings.operator, datetime.now(UTC))


async def test_unknown_involvement_notifies_nobody_until_grounds_appear(
    security: Service, publisher: Publisher, settings: Settings
) -> None:
    path = settings.db_path
    await publisher.publish(
        alert(
            "bf-1",
            category="brute_force",
            personal_data_involved="unknown",
            data_categories=[],
            affected_subjects=["debtor-1", "debtor-2"],
        )
    )
    await settled(path, 1)
    assert notices(path) == []
    assert one(path, "SELECT status FROM security_incidents") == "open"
    assert events(path)["account.lock"] == 2
    await publisher.publish(
        alert(
            "bf-2",
            category="brute_force",
            personal_data_involved="suspected",
            data_categories=[],
            affected_subjects=["debtor-3"],
        )
    )
    await settled(path, 2)
    # the grounds appear: every subject known so far is told, once
    assert sorted(s for _, s, _, _ in notices(path, "breach_notice")) == [
        "debtor-1",
        "debtor-2",
        "debtor-3",
    ]
    assert events(path)["account.lock"] == 2  # the same accounts are not locked again
    assert events(path)["incident.updated"] == 1
    assert events(path)["incident.compromise"] == 1


async def test_the_72_hour_flag_and_the_report(
    security: Service, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    path = settings.db_path
    detected = datetime.now(UTC) - timedelta(hours=73)
    await publisher.publish(
        alert("old-1", category="lost_device", detected_at=detected, affected_subjects=["d-1"])
    )
    await settled(path, 1)
    [(due_at, flag)] = sql(path, "SELECT due_at, flag FROM security_reports")
    assert datetime.fromisoformat(due_at) == detected + timedelta(hours=72)
    assert flag is None

    async with migrated_store(settings) as store:
        now = datetime.now(UTC)
        # The service's own periodic sweep may get there first: together, exactly once.
        first = await admin.sweep_reports(store, None, now, timedelta(hours=12))
        assert await admin.sweep_reports(store, None, now, timedelta(hours=12)) == 0  # once
        assert first in (0, 1)
        incident_id = one(path, "SELECT incident_id FROM security_incidents")
        with pytest.raises(RuleViolation, match="report is not sent"):
            await admin.set_status(store, None, incident_id, IncidentStatus.CLOSED, "ops", now)
    assert one(path, "SELECT flag FROM security_reports") == "overdue"
    flagged = [
        line for line in log_lines(log_output) if line["event"] == "regulator_report_overdue"
    ]
    assert [line["incident_id"] for line in flagged] == [incident_id]

    listed = run_cli(settings, "incidents", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["incident_id"], row["report_flag"]) == (incident_id, "overdue")
    report = run_cli(settings, "incidents", "report", incident_id)
    body = json.loads(report.stdout)
    assert body["type"] == "loss"
    assert body["compromise"] == "alleged"
    assert body["subject_count"] == 1
    assert body["report_date"] is None
    late = run_cli(settings, "incidents", "report", incident_id, "--sent")
    assert late.returncode == 1
    assert "reason" in late.stderr
    sent = run_cli(
        settings, "incidents", "report", incident_id, "--sent", "--reason", "device found late"
    )
    assert sent.returncode == 0, sent.stderr
    assert document(sent.stdout)["delay_reason"] == "device found late"
    closed = run_cli(settings, "incidents", "close", incident_id)
    assert closed.returncode == 0, closed.stderr
    still_open = run_cli(settings, "incidents", "list", "--open", "--json")
    assert still_open.returncode == 0  # a query: nothing open is an answer
    assert json.loads(still_open.stdout) == []
    shown = json.loads(run_cli(settings, "incidents", "show", incident_id).stdout)
    assert shown["status"] == "closed"
    assert [t["change"] for t in shown["timeline"]][-3:] == ["report", "report", "status"]
    assert {t["cause"] for t in shown["timeline"]} >= {"alert:old-1", "sweep"}


async def test_planted_personal_data_never_reaches_logs_or_dead_letter_headers(
    security: Service, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    path = settings.db_path
    text = f"Thandi ({EMAIL}, {PHONE}, ID {SA_ID}) reported a letter sent to the wrong address"
    await publisher.publish(
        alert(
            "pii-1",
            category="misdelivery",
            description=text,
            unauthorised_party=f"neighbour {EMAIL}",
            affected_subjects=["debtor-9"],
        )
    )
    body = json.loads(encode(alert("pii-2", description=text)))
    body["payload"]["affected_subjects"] = [EMAIL, SA_ID]
    body["payload"]["unauthorised_party"] = PHONE
    await publisher.publish_raw(json.dumps(body).encode(), "security.alert")
    url = settings.amqp_url.get_secret_value()
    dlq = security.names.dlq("security")

    async def dead() -> bool:
        return await queue_depth(url, dlq) >= 1

    await wait_until(dead)
    [letter] = await drain_queue(url, dlq)
    await settled(path, 1)
    assert letter.headers[H_ERROR_TYPE] == "invalid"
    logs = log_output.getvalue()
    assert "incident_opened" in logs
    for planted in PLANTED:
        assert planted not in json.dumps(letter.headers, default=str)
        assert planted not in logs
    # stored with the incident, where it belongs; and in the regulator report
    assert one(path, "SELECT description FROM security_alerts") == text
    [(_, _, _, context)] = notices(path)
    assert EMAIL in context["unauthorised_party"]


async def test_a_high_score_with_unknown_involvement_escalates_for_a_decision(
    security: Service, publisher: Publisher, settings: Settings
) -> None:
    path = settings.db_path
    await publisher.publish(
        alert(
            "rw-1",
            source="edr",
            category="ransomware",
            personal_data_involved="unknown",
            data_categories=["special"],
            target={"system": "file-server", "account_ids": []},
        )
    )
    await settled(path, 1)
    assert one(path, "SELECT severity FROM security_incidents") == "high"
    assert notices(path) == []  # no grounds yet: nobody is notified...
    [body] = [
        b
        for k, b in sql(path, "SELECT routing_key, body FROM event_outbox")
        if k == "incident.escalated"
    ]
    escalated = json.loads(body)["payload"]
    assert escalated["decision_needed"] == "personal_data_involvement"  # ...but someone decides
    assert (
        one(path, "SELECT count(*) FROM audit_log WHERE action = 'compromise_decision_requested'")
        == 1
    )


async def test_the_report_says_which_breach_notices_reached_no_one_in_writing(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher, tmp_path: Path
) -> None:
    """POPIA s22(4)-(5): the notice goes in writing; a subject with only a phone number
    cannot get it, and the regulator report says so, with the other means s22(4) allows."""
    out = tmp_path / "out"
    changes: dict[str, Any] = {"notify_dir": out, "outbox_poll_s": 0.05}
    chosen = settings.with_changes(**changes)
    async with migrated_store(settings) as store, store.transaction() as tx:
        for subject, kind, value in (("d-mail", "email", EMAIL), ("d-phone", "phone", PHONE)):
            tx.stage(
                "INSERT INTO contact_points (tenant_id, subject_ref, kind, value)"
                " VALUES (?, ?, ?, ?)",
                ("acme", subject, kind, value),
            )
    await start_service([SecurityWorker(chosen), NotifierWorker(chosen)], **changes)
    await publisher.publish(
        alert(
            "exfil-9",
            category="data_exfiltration",
            personal_data_involved="confirmed",
            affected_subjects=["d-mail", "d-phone"],
        )
    )

    async def settled_notices() -> bool:
        statuses = sql(settings.db_path, "SELECT status FROM notification_outbox")
        return len(statuses) == 2 and all(s in ("sent", "failed") for (s,) in statuses)

    await wait_until(settled_notices, within=60)
    incident_id = one(settings.db_path, "SELECT incident_id FROM security_incidents")
    async with migrated_store(settings) as store, store.transaction() as tx:
        report = await admin.report_of(tx, await admin.load(tx, incident_id, "acme"))
    assert report is not None
    assert report["notices"] == {"sent": 1, "not_delivered": 1, "pending": 0}
    assert "s22(4)" in report["not_delivered_means"]
    assert "news media" in report["not_delivered_means"]
    assert not (out / "sms").exists()  # the notice was not cut down to an SMS
