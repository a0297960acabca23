"""Identity before any disclosure or change (docs/rules.md "Identity"): real broker and store."""

from __future__ import annotations

import json
from datetime import date
from random import Random

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from tests.support.dsr import SA_ID, answered, notices, request, snapshot, sql, verified
from workers.platform.seed import sa_id_number

GONE_ID = sa_id_number(Random(2), date(1970, 3, 3))  # debtor-gone's ID number


async def test_a_reference_and_an_id_number_of_two_people_are_refused(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    before = snapshot(db, ("none", "none"))
    await publisher.publish(
        request("r-mixed", "erasure", "debtor-open", id_number=GONE_ID, verified=True)
    )
    assert await answered(db, "r-mixed") == "refused"
    assert snapshot(db, ("none", "none")) == before  # nothing disclosed or changed
    kinds = [kind for kind, _ in notices(db, "r-mixed")]
    assert kinds == ["dsr_received", "dsr_refused"]
    reason = dict(notices(db, "r-mixed"))["dsr_refused"]["reason"]
    assert "do not belong to the same person" in reason
    assert GONE_ID not in reason

    await publisher.publish(request("r-same", "access", "debtor-open", id_number=SA_ID))
    assert await answered(db, "r-same") == "completed"


async def test_rectification_waits_for_verification_and_records_who_verified(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    db = settings.db_path
    before = snapshot(db, ("none", "none"))
    corrections = [{"field": "debtors.last_name", "value": "Nkosi-Dube"}]
    await publisher.publish(
        request("r-gate", "rectification", verified=False, details={"corrections": corrections})
    )
    assert await answered(db, "r-gate") == "awaiting_verification"
    assert snapshot(db, ("none", "none")) == before

    await publisher.publish(verified("r-gate", verified_by="agent-17", method="branch_id_check"))
    assert await answered(db, "r-gate", ("completed",)) == "completed"
    assert sql(
        db,
        "SELECT verified_by, verification_method, verified_at IS NOT NULL FROM dsr_requests"
        " WHERE request_id = 'r-gate'",
    ) == [("agent-17", "branch_id_check", 1)]
    [details] = sql(db, "SELECT details FROM audit_log WHERE action = 'dsr_identity_verified'")
    assert json.loads(details[0])["verified_by"] == "agent-17"
    assert sql(
        db, "SELECT last_name FROM debtors WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'"
    ) == [("Nkosi-Dube",)]
