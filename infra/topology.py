"""Queue topology, declared idempotently at worker start and by ``privacyops topology declare``.

With namespace ``ns`` and a worker ``w``:

* ``ns.events`` (topic): upstream publishes here, routing key = message type.
* ``ns.internal`` (direct): the runtime's own routing. Key ``w`` leads back to
  the worker queue, ``w.retry.<ms>ms`` to a retry tier, ``w.dlq`` to the
  dead-letter queue.
* ``ns.w`` (quorum): the worker queue, bound to ``ns.events`` by the upstream
  types the worker handles, to ``ns.internal`` by the internal types it handles
  (``notice.send``: never reachable from the public exchange) and by ``w``.
  Its own dead-letter target is the DLQ, used by the broker when a message passes the delivery limit
  (a message that keeps crashing the worker).
* ``ns.w.retry.<ms>ms`` (quorum, one per tier): ``x-message-ttl`` = the delay;
  expired messages dead-letter back to ``ns.internal`` / ``w``. The delay is in
  the name, so a new delay is a new queue beside the old one (queue arguments
  cannot change after declaration).
* ``ns.w.dlq`` (quorum): dead letters, with headers an admin can read.
* ``ns.outbound`` (topic): events privacyops publishes downstream
  (``consent.updated``...). Its alternate exchange ``ns.outbound.unrouted``
  (fanout) keeps events no consumer has bound yet in the queue of that name.

Broker dead-lettering is at-least-once (``x-dead-letter-strategy``, RabbitMQ
3.10+, needs ``x-overflow: reject-publish``) on every queue that dead-letters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue

from infra.rabbit import BROKER_ERRORS
from infra.runtime.audit import AUDIT
from messages.errors import BrokerUnavailable
from messages.names import Names
from messages.registry import publisher_of

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


def _dead_letter_to(exchange: str, routing_key: str) -> dict[str, Any]:
    return {
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-routing-key": routing_key,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare(
    channel: AbstractChannel,
    names: Names,
    workers: Mapping[str, Iterable[str]],
    retry_delays_ms: Sequence[int],
    delivery_limit: int,
) -> dict[str, AbstractQueue]:
    """Declare everything for ``workers`` (name -> message types); return the worker queues."""
    try:
        await _declare_exchanges(channel, names)
        return {
            worker: await _declare_worker(
                channel, names, worker, types, retry_delays_ms, delivery_limit
            )
            for worker, types in workers.items()
        }
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable(f"cannot declare topology: {type(exc).__name__}: {exc}") from exc


async def delete(
    channel: AbstractChannel, names: Names, workers: Iterable[str], retry_delays_ms: Iterable[int]
) -> None:
    """Delete every queue and exchange of a namespace (test runs, benchmarks, a retired
    deployment). Queued messages are lost with their queues: never run it on a live one."""
    queues = [names.unrouted]
    # The runtime's audit consumer runs in every service (infra/runtime/audit.py).
    for worker in dict.fromkeys([*workers, AUDIT]):
        queues += [names.queue(worker), names.dlq(worker)]
        queues += [names.retry_queue(worker, delay) for delay in retry_delays_ms]
    try:
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in (names.events, names.internal, names.outbound, names.unrouted):
            await channel.exchange_delete(exchange)
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable(f"cannot delete topology: {type(exc).__name__}") from exc


async def _declare_exchanges(channel: AbstractChannel, names: Names) -> None:
    await channel.declare_exchange(names.events, ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(names.internal, ExchangeType.DIRECT, durable=True)
    unrouted = await channel.declare_exchange(names.unrouted, ExchangeType.FANOUT, durable=True)
    await channel.declare_exchange(
        names.outbound,
        ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": names.unrouted},
    )
    parked = await channel.declare_queue(names.unrouted, durable=True, arguments=QUORUM)
    await parked.bind(unrouted)


async def _declare_worker(
    channel: AbstractChannel,
    names: Names,
    worker: str,
    types: Iterable[str],
    retry_delays_ms: Sequence[int],
    delivery_limit: int,
) -> AbstractQueue:
    dlq = await channel.declare_queue(names.dlq(worker), durable=True, arguments=QUORUM)
    await dlq.bind(names.internal, names.dlq_key(worker))
    for delay in retry_delays_ms:
        tier = await channel.declare_queue(
            names.retry_queue(worker, delay),
            durable=True,
            arguments={**QUORUM, "x-message-ttl": delay, **_dead_letter_to(names.internal, worker)},
        )
        await tier.bind(names.internal, names.retry_key(worker, delay))
    queue = await channel.declare_queue(
        names.queue(worker),
        durable=True,
        arguments={
            **QUORUM,
            "x-delivery-limit": delivery_limit,
            **_dead_letter_to(names.internal, names.dlq_key(worker)),
        },
    )
    await queue.bind(names.internal, worker)
    for message_type in types:
        internal = publisher_of(message_type) == "internal"
        await queue.bind(names.internal if internal else names.events, message_type)
    return queue
