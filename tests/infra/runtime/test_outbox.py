"""The one outbox relay (``infra/runtime/outbox.py``) on the real broker and store: it backs
off (tenacity, exponentially) while the broker refuses and then publishes every row once,
and ``stop`` drains what is in hand within its deadline, leaving the rest in the table.

The broker refuses for real: the test's outbound exchange has no alternate exchange, so
until a queue is bound every publish comes back unroutable (``mandatory``), a project
error the relay retries, as it does while a downstream queue is not declared yet.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from config.settings import Settings
from infra.rabbit import ConfirmedPublisher, Publication, connect, open_channel
from infra.runtime.outbox import EventOutbox, OutboxRelay
from infra.runtime.worker import Effects, OutboundEvent, commit_effects
from infra.store import Store
from messages.errors import PrivacyOpsError
from messages.names import Names
from tests.support.helpers import consent_changed, migrated_store, wait_until


class Timed(ConfirmedPublisher):
    """The runtime's confirmed publisher, noting when each batch is tried and what the
    broker confirmed."""

    def __init__(self, channel: AbstractChannel) -> None:
        super().__init__(channel, 10)
        self.attempts: list[float] = []
        self.confirmed: list[str] = []

    async def publish_many(
        self, exchange: str, batch: Sequence[Publication]
    ) -> list[PrivacyOpsError | None]:
        self.attempts.append(asyncio.get_running_loop().time())
        results = await super().publish_many(exchange, batch)
        self.confirmed += [str(p.message_id) for p, r in zip(batch, results, strict=True) if not r]
        return results


@dataclass
class Downstream:
    """The outbound exchange as the relay sees it, and a downstream queue to bind to it."""

    channel: AbstractChannel
    exchange: AbstractExchange
    queue: AbstractQueue

    def publisher(self) -> Timed:
        return Timed(self.channel)

    async def start_routing(self) -> None:
        await self.queue.bind(self.exchange, "#")

    async def stop_routing(self) -> None:
        await self.queue.unbind(self.exchange, "#")

    async def received(self) -> list[str]:
        got = []
        while (message := await self.queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            got.append(str(message.message_id))
        return got


@pytest.fixture
async def downstream(settings: Settings) -> AsyncIterator[Downstream]:
    names = Names(settings.namespace)
    connection = await connect(settings.amqp_url.get_secret_value(), 10)
    try:
        channel = await open_channel(connection, confirms=True)
        exchange = await channel.declare_exchange(
            names.outbound, aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queue = await channel.declare_queue(f"{names.namespace}.test-downstream", exclusive=True)
        yield Downstream(channel, exchange, queue)
    finally:
        await connection.close()


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


def relay(store: Store, publisher: Timed, settings: Settings, **options: float) -> OutboxRelay:
    outbox = EventOutbox(Names(settings.namespace))
    return OutboxRelay(store, publisher, outbox, poll_s=60, **options)


async def test_refusals_back_off_then_every_row_is_published_once(
    settings: Settings, downstream: Downstream
) -> None:
    async with migrated_store(settings) as store:
        events = await commit_events(store, 5)
        publisher = downstream.publisher()
        running = relay(store, publisher, settings, max_backoff_s=5)
        await running.start()  # takes what the table holds; nothing routes yet
        try:

            async def refused_four_times() -> bool:
                return len(publisher.attempts) >= 4

            await wait_until(refused_four_times, within=10)
            await downstream.start_routing()
            await asyncio.wait_for(running.idle(), 15)
        finally:
            await running.stop(1)
        assert sorted(await downstream.received()) == ids(events)  # each once
        assert sorted(publisher.confirmed) == ids(events)
        assert await unpublished(store) == 0
        # Waits growing 0.1 s, 0.2 s, 0.4 s between the first refusals.
        attempts = publisher.attempts
        waits = [b - a for a, b in itertools.pairwise(attempts)][:3]
        assert [w >= least for w, least in zip(waits, (0.1, 0.2, 0.4), strict=True)] == [True] * 3


async def test_stop_drains_what_is_in_hand_and_leaves_the_rest_in_the_table(
    settings: Settings, downstream: Downstream
) -> None:
    async with migrated_store(settings) as store:
        await downstream.start_routing()
        publisher = downstream.publisher()
        running = relay(store, publisher, settings)
        await running.start()
        events = await commit_events(store, 5)
        running.submit(events)  # what the runtime does after a commit
        await running.stop(5)  # returns once what was in hand is published and marked
        assert sorted(await downstream.received()) == ids(events)
        assert await unpublished(store) == 0

        # Refused for as long as the relay runs: stop keeps to its deadline; the rows stay.
        await downstream.stop_routing()
        await commit_events(store, 3)
        refused = downstream.publisher()
        stuck = relay(store, refused, settings, max_backoff_s=0.05)
        await stuck.start()
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await stuck.stop(0.5)
        assert loop.time() - asked < 3
        assert refused.attempts
        assert refused.confirmed == []
        assert await downstream.received() == []
        assert await unpublished(store) == 3
