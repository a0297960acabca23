"""Pruning the audit trail (issue 16, POPIA s14): whole segments behind a signed checkpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from config.datamap import load_retention
from config.settings import Settings
from infra.audit import checkpoints, retention
from infra.audit.verify import verify_tenant
from infra.keys import Keys
from infra.store import Store
from messages.errors import RuleViolation
from tests.infra.audit.support import append, execute, ids
from tests.support.db import sql
from tests.support.helpers import migrated_store

OLD = datetime.now(UTC) - timedelta(days=6 * 366)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """acme: seq 1-6 old and checkpointed, 7-8 old, 9-11 new; beta: 2 old rows, unsigned."""
    keys = Keys.from_settings(settings).audit
    async with migrated_store(settings) as opened:
        await append(opened, "acme", 6, now=OLD)
        await checkpoints.make_one(opened, keys, None, "acme", now=OLD)
        await append(opened, "acme", 2, now=OLD)
        await append(opened, "acme", 3)
        await append(opened, "beta", 2, now=OLD)
        yield opened


def test_the_retention_file_keeps_audit_rows_five_years() -> None:
    assert load_retention().audit_years == 5


async def test_pruning_drops_whole_segments_behind_a_checkpoint_and_keeps_verifying(
    store: Store, settings: Settings
) -> None:
    keys = Keys.from_settings(settings).audit.public_keys
    pruned = await retention.prune(store, keys, years=5)
    assert [(p.tenant_id, p.seq, p.rows) for p in pruned] == [("acme", 6, 6)]
    assert sorted(ids(settings.db_path, "acme")) == [7, 8, 9, 10, 11]
    assert sql(settings.db_path, "SELECT count(*) FROM audit_log WHERE tenant_id = 'beta'") == [
        (2,)
    ]
    report = await verify_tenant(store, "acme", keys)
    assert (report.ok, report.base_seq, report.rows) == (True, 6, 5)
    assert await retention.prune(store, keys, years=5) == []  # nothing more is behind one

    # The kept chain is still checked against the signed base...
    execute(
        settings.db_path, "DELETE FROM audit_log WHERE id = ?", ids(settings.db_path, "acme")[7]
    )
    broken = (await verify_tenant(store, "acme", keys)).broken
    assert broken is not None
    assert (broken.problem, broken.seq) == ("missing", 8)
    # ... and a base moved by hand is not a signed checkpoint.
    execute(settings.db_path, "UPDATE audit_chain_head SET base_seq = 7 WHERE tenant_id = 'acme'")
    broken = (await verify_tenant(store, "acme", keys)).broken
    assert broken is not None
    assert broken.problem == "base_unsigned"


async def test_a_broken_chain_is_not_pruned(store: Store, settings: Settings) -> None:
    keys = Keys.from_settings(settings).audit.public_keys
    execute(
        settings.db_path,
        "UPDATE audit_log SET details = '{}' WHERE id = ?",
        ids(settings.db_path, "acme")[2],
    )
    with pytest.raises(RuleViolation, match="broken"):
        await retention.prune(store, keys, years=5, tenant_id="acme")
    assert len(ids(settings.db_path, "acme")) == 11
