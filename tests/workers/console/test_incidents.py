"""The console's incident pages over HTTP: the 72-hour clock, the report, and the actions
(the CLI's functions, the admin named in the audit). Real broker, store, security worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from config.settings import Settings
from infra.console import accounts
from infra.publisher import Publisher
from infra.runtime.session import session
from messages.security import SecurityAlert, SecurityAlertPayload
from tests.support.db import sql
from tests.support.helpers import ServiceFactory, wait_until
from tests.workers.console.support import ADMINS, PASSWORD, World, client, csrf, login
from workers import registry
from workers.console import serving
from workers.security import SecurityWorker


def late_alert() -> SecurityAlert:
    payload = {
        "alert_id": "old-1",
        "source": "auth_service",
        "category": "lost_device",
        "severity_hint": "high",
        "detected_at": datetime.now(UTC) - timedelta(hours=73),
        "target": {"system": "debtor-portal", "account_ids": ["acc-1"]},
        "personal_data_involved": "suspected",
        "data_categories": ["identity", "financial"],
        "description": "A laptop was lost",
        "affected_subjects": ["d-1"],
    }
    return SecurityAlert(tenant_id="acme", payload=SecurityAlertPayload.model_validate(payload))


@pytest.fixture
async def served(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher
) -> AsyncIterator[tuple[World, str]]:
    settings = settings.with_changes(console_port=0, download_port=0)
    await start_service([SecurityWorker(settings)])
    await publisher.publish(late_alert())
    db = settings.db_path

    async def opened() -> bool:
        return bool(sql(db, "SELECT 1 FROM security_reports"))

    await wait_until(opened)
    [(incident_id,)] = sql(db, "SELECT incident_id FROM security_incidents")
    async with session(settings, registry.schemas(), broker=True) as opened_session:
        for name, role, tenants in ADMINS:
            await accounts.add(
                opened_session.store, name, PASSWORD, role, tenants, datetime.now(UTC)
            )
        async with serving(settings, opened_session, registry.names()) as running:
            base = f"http://127.0.0.1:{running.console_port}"
            yield World(settings, base, "", ""), str(incident_id)


async def test_the_clock_the_report_and_the_actions(served: tuple[World, str]) -> None:
    w, incident_id = served
    page = f"{w.console}/incidents/acme/{incident_id}"
    async with client() as viewer:
        assert await login(viewer, w, "victor") == 303
        async with viewer.get(f"{w.console}/incidents") as listing:
            text = await listing.text()
        assert f">{incident_id}</a>" in text
        assert '<tr class="overdue">' in text
        async with viewer.get(f"{page}/report.json") as report:
            fields = json.loads(await report.text())
        assert fields["subjects_notified"] == 1
        assert fields["notices"] == {"sent": 0, "not_delivered": 0, "pending": 1}
        async with viewer.get(f"{page}/report") as printable:
            assert "0 sent, 0 not delivered, 1 on the way" in await printable.text()
        token = await csrf(viewer, page)
        async with viewer.post(f"{page}/confirm", data={"csrf": token}) as refused:
            assert refused.status == 403
    async with client() as http:
        assert await login(http, w, "alice") == 303
        token = await csrf(http, page)
        async with http.post(f"{page}/confirm", data={"csrf": token}) as done:
            assert "confirm recorded" in await done.text()
        async with http.post(f"{page}/report-sent", data={"csrf": token}) as late:
            assert late.status == 409  # past 72 hours: the reasons for the delay are required
            assert "reason" in await late.text()
        form = {"csrf": token, "reason": "the device was found late"}
        async with http.post(f"{page}/report-sent", data=form) as sent:
            assert sent.status == 200
        async with http.post(f"{page}/close", data={"csrf": token}) as closed:
            assert 'id="status">closed<' in await closed.text()
        async with http.get(f"{page}/report") as printable:
            assert "the device was found late" in await printable.text()
    actors = sql(
        w.settings.db_path,
        "SELECT action, actor FROM audit_log WHERE action IN"
        " ('incident_confirmed', 'regulator_report_sent', 'incident_closed') ORDER BY id",
    )
    assert actors == [
        ("incident_confirmed", "admin:alice"),
        ("regulator_report_sent", "admin:alice"),
        ("incident_closed", "admin:alice"),
    ]
