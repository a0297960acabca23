"""Issue 14: the inbox and published outbox rows are pruned after their retention.

On both stores: rows older than ``inbox_retention_days`` go, younger ones and events not
yet published stay (an unpublished event is never dropped, however old).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config.settings import Settings
from tests.support.db import connect
from tests.support.helpers import ServiceFactory, wait_until

pytestmark = pytest.mark.timeout(60)


def ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def ids(settings: Settings, sql: str) -> set[str]:
    with connect(settings.db_path) as conn:
        return {row[0] for row in conn.execute(sql)}


async def test_old_inbox_and_published_event_rows_are_pruned(
    start_service: ServiceFactory, settings: Settings
) -> None:
    service = await start_service(inbox_retention_days=7, prune_interval_s=0.2)
    with connect(settings.db_path) as conn:
        for message_id, days in (("old-1", 8), ("old-2", 30), ("young", 6)):
            conn.execute(
                "INSERT INTO inbox (worker, tenant_id, message_id, type, processed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                ("consent", "acme", message_id, "consent.changed", ago(days)),
            )
        for message_id, created, published in (
            ("ev-old", 9, 8),
            ("ev-young", 6, 6),
            ("ev-unpublished", 40, None),
        ):
            conn.execute(
                "INSERT INTO event_outbox (message_id, tenant_id, routing_key, body,"
                " created_at, published_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    message_id,
                    "acme",
                    "consent.updated",
                    b"{}",
                    ago(created),
                    ago(published) if published is not None else None,
                ),
            )

    async def pruned() -> bool:
        return ids(settings, "SELECT message_id FROM inbox") == {"young"}

    await wait_until(pruned, within=20)
    # The relay may publish the unpublished row meanwhile (its body is not an event it
    # knows: either way it is never pruned before it is published).
    events = ids(settings, "SELECT message_id FROM event_outbox")
    assert "ev-old" not in events
    assert {"ev-young", "ev-unpublished"} <= events
    assert service.ready
