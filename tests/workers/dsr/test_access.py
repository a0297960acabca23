"""The access package holds what POPIA s23 / GDPR art 15 require (docs/rules.md "Access")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.security import SecurityAlert, SecurityAlertPayload
from tests.support.dsr import (
    DATAMAP,
    answered,
    execute,
    off_loop,
    package_document,
    request,
    sql,
)
from tests.support.helpers import ServiceFactory, wait_until
from workers.security import SecurityWorker


async def test_the_access_package_says_why_from_where_to_whom_and_how_long(
    dsr: Service,
    publisher: Publisher,
    settings: Settings,
    start_service: ServiceFactory,
) -> None:
    db = settings.db_path
    # a column a tenant added that the map does not know
    await off_loop(execute, db, "ALTER TABLE notes ADD COLUMN mood TEXT")
    await off_loop(
        execute, db, "UPDATE notes SET mood = 'hostile' WHERE subject_ref = 'debtor-open'"
    )
    await start_service([SecurityWorker(settings)])
    await publisher.publish(
        SecurityAlert(
            tenant_id="acme",
            payload=SecurityAlertPayload.model_validate(
                {
                    "alert_id": "dlp-1",
                    "source": "dlp",
                    "category": "misdelivery",
                    "detected_at": datetime.now(UTC) - timedelta(minutes=1),
                    "target": {"system": "letters"},
                    "affected_subjects": ["debtor-open"],
                    "personal_data_involved": "confirmed",
                    "data_categories": ["contact"],
                    "unauthorised_party": "Mr J. Soap of 3 Other Street",
                }
            ),
        )
    )

    async def incident_recorded() -> bool:
        return sql(db, "SELECT count(*) FROM security_incident_subjects") == [(1,)]

    await wait_until(incident_recorded)
    fix = {"corrections": [{"field": "accounts.balance_cents", "value": "0"}]}
    await publisher.publish(request("r-before", "rectification", details=fix))
    assert await answered(db, "r-before") == "refused"
    await publisher.publish(request("r-all", "access"))
    assert await answered(db, "r-all") == "completed"

    document = package_document(db, settings, "r-all")
    for name, table in document["tables"].items():
        assert table["purposes"] == DATAMAP.tables[name].purposes, name
        assert table["purposes"]
        assert table["source"]
        assert table["categories"]
        assert "disclosed_to" in table
        assert table["retention"], name
    assert any("Prescription Act" in r for r in document["tables"]["debtors"]["retention"])
    assert document["tables"]["notes"]["unclassified_columns"] == [{"mood": "hostile"}]
    [incident] = document["security_incidents"]
    assert incident["category"] == "misdelivery"
    assert "Soap" not in repr(document)  # another person's data is not disclosed
    assert [r["request_id"] for r in document["your_requests"]] == ["r-before"]
    assert document["corrections_requested_but_not_made"][0]["field"] == "accounts.balance_cents"
