"""Steps per data source survive a crash (issue 13): the store-level mechanism, both stores.

A process that recorded a step ``running`` (the "before" record) and died leaves it to be
taken up again once ``handler_timeout_s`` has passed; the request is then answered once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from config.settings import Settings
from infra.runtime.worker import Effects, commit_effects
from messages.dsr import Regime, RequestKind
from tests.support.dsr import plant, sql
from tests.support.helpers import migrated_store
from workers.dsr import DsrWorker, steps
from workers.dsr.requests import DETAILS, Request
from workers.dsr.rules import Status


async def test_a_step_left_running_by_a_crash_is_taken_up_again_and_answered_once(
    settings: Settings, tmp_path: Path
) -> None:
    db = settings.db_path
    changed = settings.with_changes(export_dir=tmp_path / "exports", handler_timeout_s=5)
    async with migrated_store(changed) as store:
        plant(db, "acme", "debtor-gone", account="closed", closed="2015-06-30")
        worker = DsrWorker(changed)
        runner = worker.attach(store, None)
        crashed_at = datetime.now(UTC) - timedelta(minutes=5)
        effects = Effects.standalone("dsr", "acme", actor="test", now=crashed_at)
        request = Request(
            tenant_id="acme",
            request_id="r-crash",
            kind=RequestKind.ERASURE,
            regime=Regime.POPIA,
            subject_ref="debtor-gone",
            status=Status.IN_PROGRESS,
            verified=True,
            received_at=crashed_at,
            due_on=crashed_at.date() + timedelta(days=30),
            reply_channel="email",
            details=DETAILS.validate_python({"kind": "erasure"}),
        )
        request.save(effects, "m-1")
        steps.plan(effects, "r-crash", 0, ["embedded"])
        effects.write(  # the "before" record of an attempt whose process died
            "UPDATE dsr_steps SET status = 'running', attempts = 1, started_at = ?"
            " WHERE request_id = 'r-crash'",
            (crashed_at.isoformat(),),
        )
        await commit_effects(store, None, effects)

        now = datetime.now(UTC)
        assert await runner.run_due(now - timedelta(minutes=4, seconds=58)) == 0  # not stale yet
        assert await runner.run_due(now) == 1
        assert await runner.run_due(now) == 0  # nothing left: answered once
        await worker.close()
    assert sql(db, "SELECT status, attempts FROM dsr_steps WHERE request_id = 'r-crash'") == [
        ("done", 2)
    ]
    assert sql(db, "SELECT status FROM dsr_requests WHERE request_id = 'r-crash'") == [
        ("completed",)
    ]
    assert sql(db, "SELECT count(*) FROM debtors WHERE subject_ref = 'debtor-gone'") == [(0,)]
    answers = sql(
        db,
        "SELECT count(*) FROM notification_outbox WHERE kind = 'dsr_completed'"
        " AND context LIKE '%r-crash%'",
    )
    assert answers == [(1,)]
