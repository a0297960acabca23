"""Linking rows as they are written, and the periodic checkpoints (issue 16), on both stores."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from config.settings import Settings
from infra.audit.verify import verify
from infra.keys import Keys
from infra.runtime.audit import AuditWorker
from infra.runtime.worker import Effects, Resources
from messages.audit import AuditCheckpoint
from messages.names import Names
from messages.registry import decode
from tests.infra.audit.support import append
from tests.support.db import sql
from tests.support.helpers import migrated_store


async def test_a_read_of_the_audit_log_sees_the_rows_the_transaction_staged(
    settings: Settings,
) -> None:
    async with migrated_store(settings) as store:
        async with store.transaction() as tx:
            effects = Effects.standalone("test", "acme")
            effects.audit("first", "debtor-1")
            tx.stage_all(effects.writes)
            seen = await tx.fetchall("SELECT seq FROM audit_log WHERE tenant_id = ?", ("acme",))
            effects = Effects.standalone("test", "acme")
            effects.audit("second", "debtor-1")
            tx.stage_all(effects.writes)
        assert seen == [(1,)]
        keys = Keys.from_settings(settings).audit.public_keys
        [report] = await verify(store, keys, "acme")
        assert (report.ok, report.rows, report.head_seq) == (True, 2, 2)


class Collect:
    """A sink that keeps what it is handed (instead of the outbox relays)."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def submit(self, batch: Sequence[Effects]) -> None:
        self.events.extend(decode(e.body) for effects in batch for e in effects.events)


async def test_every_service_checkpoints_moved_heads_once_an_interval(settings: Settings) -> None:
    changed = settings.with_changes(audit_checkpoint_interval_s=60)
    async with migrated_store(changed) as store:
        await append(store, "acme", 3)
        worker = AuditWorker()
        keys = Keys.from_settings(changed)
        await worker.open(Resources(changed, store, None, Names(changed.namespace), keys))  # type: ignore[arg-type]
        sink, start = Collect(), datetime.now(UTC)
        await worker.tick(store, sink, start)  # the first one an interval after start
        await worker.tick(store, sink, start + timedelta(seconds=30))
        assert sql(changed.db_path, "SELECT count(*) FROM audit_checkpoints") == [(0,)]
        await worker.tick(store, sink, start + timedelta(seconds=61))
        await append(store, "beta", 1)
        await worker.tick(store, sink, start + timedelta(seconds=90))  # within the interval
        assert sql(changed.db_path, "SELECT tenant_id, seq FROM audit_checkpoints") == [("acme", 3)]
        [event] = sink.events
        assert isinstance(event, AuditCheckpoint)
        assert (event.tenant_id, event.payload.seq, event.payload.key_id) == (
            "acme",
            3,
            keys.audit.key_id,
        )
        outbox = sql(changed.db_path, "SELECT routing_key FROM event_outbox")
        assert outbox == [("audit.checkpoint",)]
