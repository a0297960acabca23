"""Adding a worker: a package and one registry line (README "Adding a worker").

``TallyWorker`` is defined here, registered with one ``Registration`` line, and run by the
real runtime against the real broker and a real store, beside a registered worker: its
schema is migrated with everyone's, its queue is declared from its handlers, and a type it
has no handler for is dead-lettered as ``unknown_type``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

import pytest

from config.settings import Settings
from infra.headers import H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.worker import Effects, Worker, handles
from infra.store.migrations import Migration, Schema, portable
from messages.consent import ConsentChanged
from messages.dsr import DsrVerified, DsrVerifiedPayload
from messages.registry import encode
from tests.support.db import connect
from tests.support.helpers import (
    ServiceFactory,
    consent_changed,
    drain_queue,
    queue_depth,
    wait_until,
)
from workers import registry
from workers.registry import Registration

TALLIES = """
CREATE TABLE tallies (
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    changes     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref)
);
"""


class TallyWorker(Worker):
    """Counts consent changes per subject (a worker as small as they come)."""

    name: ClassVar[str] = "tally"
    schema = Schema("tally", (Migration(1, "tallies", portable(TALLIES)),))

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @handles(ConsentChanged)
    async def changed(self, message: ConsentChanged, effects: Effects) -> None:
        effects.write(
            "INSERT INTO tallies (tenant_id, subject_ref, changes) VALUES (?, ?, 1)"
            " ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET changes = tallies.changes + 1",
            (message.tenant_id, message.payload.subject_ref),
        )
        effects.audit("tallied", message.payload.subject_ref)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "WORKERS", (*registry.WORKERS, Registration(TallyWorker)))


def test_every_registered_worker_runs_by_default(registered: None, settings: Settings) -> None:
    assert registry.names()[-1] == "tally"
    assert [w.name for w in registry.build_workers([], settings)] == list(registry.names())
    assert TallyWorker.schema in registry.schemas()
    with pytest.raises(ValueError, match="unknown worker"):
        registry.build_workers(["talley"], settings)


async def test_a_worker_defined_here_runs_beside_a_registered_one(
    registered: None, start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    workers = registry.build_workers(["consent", "tally"], settings)
    service = await start_service(workers)
    for subject in ("debtor-1", "debtor-1", "debtor-2"):
        await publisher.publish(consent_changed(subject))

    def tallies() -> list[tuple[str, int]]:
        with connect(settings.db_path) as conn:
            return conn.execute("SELECT subject_ref, changes FROM tallies ORDER BY 1").fetchall()

    def channels() -> int:
        with connect(settings.db_path) as conn:
            return int(conn.execute("SELECT count(*) FROM consent_state").fetchone()[0])

    async def counted() -> bool:
        # Both workers consume the same messages from their own queues, each at its pace.
        return tallies() == [("debtor-1", 2), ("debtor-2", 1)] and channels() == 2

    await wait_until(counted)

    # A type the worker has no handler for, routed to its queue, is refused by name.
    verified = DsrVerified(
        tenant_id="acme",
        payload=DsrVerifiedPayload(
            request_id="r-1",
            verified_by="agent-1",
            method="id_check",
            verified_at=datetime.now(UTC),
        ),
    )
    await publisher._publisher.publish(  # type: ignore[union-attr]
        service.names.internal, "tally", encode(verified)
    )
    url, dlq = settings.amqp_url.get_secret_value(), service.names.dlq("tally")

    async def refused() -> bool:
        return await queue_depth(url, dlq) == 1

    await wait_until(refused)
    [dead] = await drain_queue(url, dlq)
    assert dead.headers[H_ERROR_TYPE] == "unknown_type"
