"""The one outbox relay (``infra/runtime/outbox.py``) on a real store: it backs off
(tenacity, exponentially) while publishing fails and then publishes every row once, and
``stop`` drains what is in hand within its deadline, leaving the rest in the table.

The broker is a stand-in here (the relay's publisher), so that it can refuse on demand;
the relay against the real broker is exercised by every worker test."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from config.settings import Settings
from infra.rabbit import Publication
from infra.runtime.outbox import EventOutbox, OutboxRelay
from infra.runtime.worker import Effects, OutboundEvent, commit_effects
from infra.store import Store
from messages.errors import BrokerUnavailable, PrivacyOpsError
from messages.names import Names
from tests.support.helpers import consent_changed, migrated_store


class Broker:
    """A confirmed publisher that refuses the first ``failures`` batches (the broker is
    away) and takes ``delay`` seconds to confirm a batch."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.attempts: list[float] = []
        self.published: list[str] = []

    async def publish_many(
        self, exchange: str, batch: Sequence[Publication]
    ) -> list[PrivacyOpsError | None]:
        self.attempts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            return [BrokerUnavailable("broker away") for _ in batch]
        self.published += [str(p.message_id) for p in batch]
        return [None for _ in batch]


async def commit_events(store: Store, n: int) -> list[OutboundEvent]:
    """``n`` downstream events committed to ``event_outbox``, as the runtime hands them on."""
    effects = Effects.standalone("test", "acme")
    for i in range(n):
        effects.emit(consent_changed(f"debtor-{i}"))
    await commit_effects(store, None, effects)
    return effects.events


def ids(events: list[OutboundEvent]) -> list[str]:
    return sorted(e.message_id for e in events)


async def unpublished(store: Store) -> int:
    async with store.transaction() as tx:
        row = await tx.fetchone("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
    assert row is not None
    return int(row[0])


def relay(store: Store, broker: Broker, settings: Settings, **options: float) -> OutboxRelay:
    outbox = EventOutbox(Names(settings.namespace))
    return OutboxRelay(store, broker, outbox, poll_s=60, **options)  # type: ignore[arg-type]


async def test_failures_back_off_then_every_row_is_published_once(settings: Settings) -> None:
    async with migrated_store(settings) as store:
        events = await commit_events(store, 5)
        broker = Broker(failures=3)
        running = relay(store, broker, settings, max_backoff_s=5)
        await running.start()  # takes what the table holds
        try:
            await asyncio.wait_for(running.idle(), 10)
        finally:
            await running.stop(1)
        assert sorted(broker.published) == ids(events)
        assert await unpublished(store) == 0
        # Three refusals, three waits growing 0.1 s, 0.2 s, 0.4 s, then the success.
        waits = [b - a for a, b in zip(broker.attempts, broker.attempts[1:], strict=False)]
        assert len(waits) == 3
        assert [w >= least for w, least in zip(waits, (0.1, 0.2, 0.4), strict=True)] == [True] * 3


async def test_stop_drains_what_is_in_hand_and_leaves_the_rest_in_the_table(
    settings: Settings,
) -> None:
    async with migrated_store(settings) as store:
        slow = Broker(delay=0.3)
        running = relay(store, slow, settings)
        await running.start()
        events = await commit_events(store, 5)
        running.submit(events)  # what the runtime does after a commit
        await running.stop(5)  # returns once what was in hand is published and marked
        assert sorted(slow.published) == ids(events)
        assert await unpublished(store) == 0

        # A broker that never comes back: stop keeps to its deadline; the rows stay.
        await commit_events(store, 3)
        down = Broker(failures=1_000_000)
        stuck = relay(store, down, settings, max_backoff_s=0.05)
        await stuck.start()
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await stuck.stop(0.5)
        assert loop.time() - asked < 3
        assert down.attempts
        assert down.published == []
        assert await unpublished(store) == 3
