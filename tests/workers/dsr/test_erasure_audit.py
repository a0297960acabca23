"""Erasure and the audit trail (issue 16, POPIA s24 with s19): the chain stays valid.

Audit rows hold opaque references and keyed digests only, so an erasure never needs
to touch them: after a rectification and an erasure of the subject, every tenant's
chain verifies, no value of the subject's personal data is in any audit row, and the
subject's audit bundle still verifies offline.
"""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings
from infra.audit import bundle, proof
from infra.audit.verify import verify
from infra.keys import Keys
from infra.publisher import Publisher
from infra.runtime.service import Service
from tests.support.dsr import answered, request, sql


async def test_an_erasure_leaves_the_chain_valid_and_the_subjects_data_out_of_it(
    dsr: Service, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    [person] = sql(
        db,
        "SELECT first_name, last_name, id_number, date_of_birth FROM debtors"
        " WHERE tenant_id = 'acme' AND subject_ref = 'debtor-gone'",
    )
    contacts = sql(
        db,
        "SELECT value FROM contact_points WHERE tenant_id = 'acme' AND subject_ref = 'debtor-gone'",
    )
    new_email = "t.nkosi.new@example.org"
    personal = {*map(str, person), *(v for (v,) in contacts), new_email}
    fix = {"corrections": [{"field": "contact_points.email", "value": new_email}]}
    await publisher.publish(request("r-fix", "rectification", "debtor-gone", details=fix))
    assert await answered(db, "r-fix") in ("completed", "partially_completed", "refused")
    await publisher.publish(request("r-bye", "erasure", "debtor-gone"))
    assert await answered(db, "r-bye") == "completed"

    keys = Keys.from_settings(settings).audit
    reports = await verify(dsr.store, keys.public_keys, None)
    assert {r.tenant_id for r in reports} >= {"acme"}
    assert all(r.ok for r in reports), [r.broken for r in reports if r.broken]
    acme = next(r for r in reports if r.tenant_id == "acme")
    erased = sql(db, "SELECT count(*) FROM audit_log WHERE action = 'subject_data_erased'")
    assert erased[0][0] > 0
    assert acme.rows == sql(db, "SELECT count(*) FROM audit_log WHERE tenant_id = 'acme'")[0][0]

    audit_text = repr(sql(db, "SELECT * FROM audit_log"))
    assert not [value for value in personal if value in audit_text]

    folder, count = await bundle.export(
        dsr.store, keys, None, "acme", bundle.Selection(request_id="r-bye"), tmp_path / "b"
    )
    assert count > 0
    assert proof.verify_bundle(folder, keys.public_key.hex()) == []
    exported = (folder / proof.ROWS_FILE).read_text() + (folder / proof.MANIFEST_FILE).read_text()
    assert not [value for value in personal if value in exported]
