"""Issue 14, section 2: a crash outside the handlers isolates the poison message.

Before: the whole batch was requeued after such a crash, so through the queue's delivery
limit the good messages of the batch were dead-lettered beside the poison one. Now the
batch is applied again one delivery at a time and only the one that crashes alone is
requeued (and, past the limit, dead-lettered by the broker).

The crash is planted in the sender check, which runs for every delivery before any
handler (a bug there is exactly "outside the handlers"); broker and store are real.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage

from config.settings import Settings
from infra.headers import H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.auth import Authenticated, Authenticator
from messages.envelope import Envelope
from tests.support.db import connect
from tests.support.helpers import (
    ServiceFactory,
    consent_changed,
    drain_queue,
    queue_depth,
    wait_until,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.stores("sqlite")]


class CrashesOnPoison:
    """The real sender check, with a bug for bodies that name a ``poison-`` subject."""

    def __init__(self, inner: Authenticator | None) -> None:
        self.inner = inner
        self.crashes = 0

    def check(self, raw: AbstractIncomingMessage, now: datetime | None = None) -> Authenticated:
        if b"poison-" in raw.body:
            self.crashes += 1
            raise RuntimeError("a bug outside the handlers")
        return self.inner.check(raw, now) if self.inner else Authenticated(None, None)

    def authorize(self, found: Authenticated, message: Envelope) -> None:
        if self.inner is not None:
            self.inner.authorize(found, message)


def count(settings: Settings, sql: str) -> int:
    with connect(settings.db_path) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def test_only_the_poison_message_is_dead_lettered(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    # One batch of all 40 (a long window), and a small delivery limit.
    service = await start_service(batch_window_ms=300, batch_max=100, delivery_limit=2)
    [consumer] = [c for c in service.consumers if c.worker.name == "consent"]
    planted = CrashesOnPoison(consumer.auth)
    consumer.auth = planted  # type: ignore[assignment]
    good = [consent_changed(f"good-{i:02d}") for i in range(39)]
    poison = consent_changed("poison-1")
    for message in (*good[:20], poison, *good[20:]):
        await publisher.publish(message)

    url = settings.amqp_url.get_secret_value()
    dlq = service.names.dlq("consent")

    async def settled() -> bool:
        applied = count(settings, "SELECT COUNT(*) FROM inbox")
        return applied == len(good) and await queue_depth(url, dlq) == 1

    await wait_until(settled, within=60)
    assert planted.crashes >= 3  # in the batch, alone, and again until the limit
    [letter] = await drain_queue(url, dlq)
    letter_id = _envelope_id(letter)
    assert letter_id == str(poison.message_id)
    assert (letter.headers or {}).get("x-first-death-reason") == "delivery_limit" or (
        (letter.headers or {}).get(H_ERROR_TYPE) is None
    )
    ids = {str(m.message_id) for m in good}
    with connect(settings.db_path) as conn:
        applied = {row[0] for row in conn.execute("SELECT message_id FROM inbox")}
    assert applied == ids
    assert await queue_depth(url, service.names.queue("consent")) == 0


def _envelope_id(letter: Any) -> str:
    import json

    return str(json.loads(letter.body)["message_id"])
