"""Confirmed publishing on the real broker: ``publish`` and the relay's ``publish_many``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from infra.rabbit import ConfirmedPublisher, Publication, connect, open_channel
from messages.errors import BrokerUnavailable, PublishRejected


@pytest.fixture
async def exchange(amqp_url: str) -> AsyncIterator[tuple[ConfirmedPublisher, str, str]]:
    """A direct exchange with one bound queue (key ``routed``), and a confirming publisher."""
    connection = await connect(amqp_url, 10)
    channel = await open_channel(connection, confirms=True)
    name = f"t{uuid.uuid4().hex[:12]}.rabbit"
    declared = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, auto_delete=True)
    queue = await channel.declare_queue(name)
    await queue.bind(declared, "routed")
    try:
        yield ConfirmedPublisher(channel, 10), name, name
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await declared.delete()
        await connection.close()


async def drained(amqp_url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await connect(amqp_url, 10)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        got = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            got.append(message)
        return got
    finally:
        await connection.close()


async def test_a_batch_is_confirmed_per_message_and_an_unroutable_one_alone_is_rejected(
    exchange: tuple[ConfirmedPublisher, str, str],
) -> None:
    publisher, name, _ = exchange
    batch = [
        Publication("routed" if i != 3 else "nowhere", f"body-{i}".encode(), f"m-{i}")
        for i in range(8)
    ]
    results = await publisher.publish_many(name, batch)
    assert [r is None for r in results] == [i != 3 for i in range(8)]
    assert isinstance(results[3], PublishRejected)
    assert "nowhere" in str(results[3])
    # The channel is still usable, and a later batch gets its own confirms.
    assert await publisher.publish_many(name, [Publication("routed", b"again", "m-9")]) == [None]


async def test_a_batch_arrives_whole_and_in_order_with_its_properties(
    amqp_url: str, exchange: tuple[ConfirmedPublisher, str, str]
) -> None:
    publisher, name, queue_name = exchange
    batch = [
        Publication("routed", f"{i}".encode() * (i * 5000 + 1), f"m-{i}", f"c-{i}", {"n": i})
        for i in range(20)  # bodies larger than a frame are split, as basic_publish does
    ]
    assert await publisher.publish_many(name, batch) == [None] * 20
    got = await drained(amqp_url, queue_name)
    assert [m.message_id for m in got] == [f"m-{i}" for i in range(20)]
    assert [m.correlation_id for m in got] == [f"c-{i}" for i in range(20)]
    assert [m.headers for m in got] == [{"n": i} for i in range(20)]
    assert [m.body for m in got] == [p.body for p in batch]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)


async def test_an_exchange_that_does_not_exist_fails_the_whole_batch_typed(
    amqp_url: str,
) -> None:
    connection = await connect(amqp_url, 10)
    try:
        channel = await open_channel(connection, confirms=True)
        publisher = ConfirmedPublisher(channel, 10)
        results = await publisher.publish_many(
            f"t{uuid.uuid4().hex[:12]}.missing", [Publication("k", b"x"), Publication("k", b"y")]
        )
        assert len(results) == 2
        assert all(isinstance(r, PublishRejected | BrokerUnavailable) for r in results)
    finally:
        await connection.close()
