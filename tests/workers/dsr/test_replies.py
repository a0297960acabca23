"""Answers reach the subject: the address is fixed when a request arrives (issue 10 item 8).

An erasure deletes the contact points in the transaction that queues its answer, and a
deferred erasure does the same when its hold expires; a request about someone the tenant
does not hold has no contact point at all. Each answer must still arrive, by the real
notifier (file channel), at the address fixed for the request, and the copies of that
address must go once they are no longer needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_string, policy
from pathlib import Path

import pytest

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from tests.support.dsr import EMAIL, answered, request, sql, start_dsr
from tests.support.helpers import ServiceFactory, wait_until
from workers.dsr import DsrWorker
from workers.dsr.sweeps import run_all


@pytest.fixture
async def answering(settings: Settings, start_service: ServiceFactory, tmp_path: Path) -> Service:
    return await start_dsr(settings, start_service, tmp_path, notifier=True)


async def sent(db: Path, request_id: str, kind: str) -> None:
    async def done() -> bool:
        rows = sql(
            db,
            "SELECT status FROM notification_outbox WHERE kind = ? AND context LIKE ?",
            kind,
            f'%"request_id": "{request_id}"%',
        )
        return rows == [("sent",)]

    await wait_until(done)


def mails_to(out: Path, subject_words: str) -> list[str]:
    """The recipients of the e-mails written whose subject holds ``subject_words``."""
    found = []
    for path in (out / "email").glob("*.eml"):
        mail = message_from_string(path.read_text(), policy=policy.default)
        if subject_words in str(mail["Subject"]):
            found.append(str(mail["To"]))
    return found


async def test_the_answer_to_a_complete_erasure_reaches_the_subject(
    answering: Service, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    await publisher.publish(request("r-gone", "erasure", "debtor-gone"))
    assert await answered(db, "r-gone") == "completed"
    assert sql(db, "SELECT count(*) FROM contact_points WHERE subject_ref = 'debtor-gone'") == [
        (0,)
    ]
    await sent(db, "r-gone", "dsr_completed")
    assert mails_to(tmp_path / "out", "r-gone is complete") == [EMAIL]
    # Every copy of the address is gone once the answer went.
    assert sql(db, "SELECT reply_addresses FROM dsr_requests WHERE request_id = 'r-gone'") == [
        (None,)
    ]
    assert sql(db, "SELECT count(*) FROM notification_outbox WHERE sealed IS NOT NULL") == [(0,)]


async def test_a_deferred_erasure_answers_at_the_address_kept_with_the_request(
    answering: Service, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    await publisher.publish(request("r-later", "erasure"))
    assert await answered(db, "r-later") == "partially_completed"
    kept = sql(db, "SELECT reply_addresses FROM dsr_requests WHERE request_id = 'r-later'")
    assert kept[0][0] is not None  # kept...
    assert EMAIL not in kept[0][0]  # ...sealed
    await sent(db, "r-later", "dsr_completed")  # the partial answer went before the sweep
    async with answering.store.transaction() as tx:
        await tx.execute(
            "UPDATE accounts SET status = 'closed', closed_on = '2016-01-01'"
            " WHERE tenant_id = 'acme' AND subject_ref = 'debtor-open'"
        )
    worker = answering.workers[0]
    assert isinstance(worker, DsrWorker)
    assert await run_all(worker, answering.store, answering.outboxes, datetime.now(UTC))
    assert await answered(db, "r-later", ("completed",)) == "completed"
    assert sql(
        db,
        "SELECT count(*) FROM contact_points WHERE tenant_id = 'acme'"
        " AND subject_ref = 'debtor-open'",
    ) == [(0,)]
    answering.outboxes.notices.poke()  # type: ignore[union-attr]
    await sent(db, "r-later", "dsr_completed")
    # the partial answer and, after the sweep, the final one: both at the subject's address
    assert mails_to(tmp_path / "out", "r-later is complete") == [EMAIL, EMAIL]
    assert sql(db, "SELECT reply_addresses FROM dsr_requests WHERE request_id = 'r-later'") == [
        (None,)
    ]


async def test_a_request_whose_subject_is_not_found_is_answered_at_the_address_it_gave(
    answering: Service, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    given = "someone.else@example.org"
    await publisher.publish(request("r-nobody", "access", "debtor-unknown", email=given))
    assert await answered(db, "r-nobody") == "completed"
    await sent(db, "r-nobody", "dsr_received")
    await sent(db, "r-nobody", "dsr_completed")
    assert mails_to(tmp_path / "out", "we received your request r-nobody") == [given]
    assert mails_to(tmp_path / "out", "r-nobody is complete") == [given]
