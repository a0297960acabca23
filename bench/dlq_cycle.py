"""How fast an admin reads and replays a dead-letter queue (one cycle per command).

    .venv/bin/python bench/dlq_cycle.py [--messages 2000]

Declares a throw-away namespace, fills ``ns.bench.dlq`` with N runtime dead letters,
then times, in-process (no CLI start-up): a listing cycle (get, confirmed copy to the
tail, ack, per message), a replay of all of them to the worker queue (confirmed
publish, audit row commit, ack), and checks that the listing kept the order.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from pydantic import SecretStr

from config.settings import Settings
from infra import topology
from infra.dlq.admin import DeadLetterAdmin, Verdict
from infra.dlq.codec import DeadLetter
from infra.headers import H_ATTEMPTS, H_ERROR, H_ERROR_TYPE, H_WORKER
from infra.runtime.session import all_schemas
from infra.store import migrations, open_store
from messages.consent import ConsentChanged, ConsentChangedPayload, Evidence
from messages.names import Names
from messages.registry import encode
from workers import registry

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
WORKER = "bench"


def consent_changed(subject_ref: str) -> ConsentChanged:
    payload = ConsentChangedPayload(
        subject_ref=subject_ref,
        channel="email",
        status="granted",
        source="web_form",
        evidence=Evidence(reference="form-1"),
    )
    return ConsentChanged(tenant_id="acme", occurred_at=datetime.now(UTC), payload=payload)


async def delete_namespace(names: Names) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        for queue in (names.queue(WORKER), names.dlq(WORKER), names.retry_queue(WORKER, 1000)):
            await channel.queue_delete(queue)
        await channel.queue_delete(names.unrouted)
        for exchange in (names.events, names.internal, names.outbound, names.unrouted):
            await channel.exchange_delete(exchange)


async def fill(names: Names, count: int) -> list[str]:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    ids = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel, names, {WORKER: ()}, [1000], 20)
        for _ in range(count):
            message = consent_changed(f"debtor-{uuid.uuid4().hex[:8]}")
            ids.append(str(message.message_id))
            headers = {
                H_ATTEMPTS: 1,
                H_ERROR_TYPE: "handler_crashed",
                H_ERROR: "x",
                H_WORKER: WORKER,
            }
            await channel.default_exchange.publish(
                aio_pika.Message(encode(message), headers=headers, message_id=ids[-1]),
                names.dlq(WORKER),
            )
    return ids


async def main(count: int) -> None:
    names = Names(f"bench{uuid.uuid4().hex[:8]}")
    db = Path(tempfile.mkdtemp(prefix="dlq-bench-")) / "store.db"
    settings = Settings(
        amqp_url=SecretStr(AMQP_URL),
        namespace=names.namespace,
        db_path=db,
        key_dir=db.parent / "keys",
    )
    store = open_store(settings)
    await store.open()
    await migrations.migrate(store, all_schemas(registry.schemas()))
    try:
        ids = await fill(names, count)
        seen: list[str] = []

        async def keep(letter: DeadLetter) -> Verdict:
            seen.append(letter.id)
            return Verdict.KEEP

        async def replay(letter: DeadLetter) -> Verdict:
            return Verdict.REPLAY

        async with DeadLetterAdmin(settings, store) as admin:
            started = time.perf_counter()
            await admin.cycle(WORKER, keep)
            listed = time.perf_counter() - started
            started = time.perf_counter()
            result = await admin.cycle(WORKER, replay)
            replayed = time.perf_counter() - started
        print(f"list cycle:   {count / listed:,.0f} msg/s ({listed:.2f} s for {count})")
        print(f"replay cycle: {result.replayed / replayed:,.0f} msg/s ({replayed:.2f} s)")
        print(f"order kept by the listing: {seen == ids}")
    finally:
        await store.close()
        await delete_namespace(names)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    asyncio.run(main(parser.parse_args().messages))
