"""Shared fixtures: the real RabbitMQ and a real SQLite file, unique names per test.

Each test gets its own namespace (so its own exchanges and queues) and its own
database file; the broker objects are deleted when the test ends. If RabbitMQ
does not answer, broker tests fail with a clear message: they never skip.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from config.settings import Settings
from infra import logging as plog
from infra.service import Service
from infra.topology import Names
from infra.worker import Worker
from messages.consent import ConsentChanged, ConsentChangedPayload, Evidence
from messages.publisher import Publisher

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    async def probe() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"RabbitMQ does not answer at {AMQP_URL} ({type(exc).__name__}); "
            "start it with `rabbitmq-server -detached` (scripts/test does this)",
            pytrace=False,
        )
    return AMQP_URL


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(amqp_url: str, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        amqp_url=amqp_url,
        namespace=namespace,
        db_path=tmp_path / "store.db",
        retry_delays_ms=[50, 100, 200],
        batch_window_ms=5,
        shutdown_drain_s=5,
        handler_timeout_s=5,
        connect_timeout_s=5,
        publish_timeout_s=5,
        log_format="json",
    )


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the real logging pipeline renders (redaction included), as JSON lines."""
    stream = io.StringIO()
    plog.configure("debug", "json", stream)
    yield stream
    plog.configure("info", "json")


async def delete_namespace(url: str, names: Names, workers: list[str], delays: list[int]) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        queues = [names.unrouted]
        for worker in workers:
            queues += [names.queue(worker), names.dlq(worker)]
            queues += [names.retry_queue(worker, d) for d in delays]
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in (names.events, names.internal, names.outbound, names.unrouted):
            await channel.exchange_delete(exchange)


ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(settings: Settings) -> AsyncIterator[ServiceFactory]:
    """Start a Service (default: the consent worker); stopped and cleaned up after the test."""
    started: list[Service] = []
    worker_names: set[str] = set()
    delays: set[int] = set(settings.retry_delays_ms)

    async def start(workers: list[Worker] | None = None, **overrides: Any) -> Service:
        service = Service(settings.with_changes(**overrides), workers)
        worker_names.update(w.name for w in service.workers)
        delays.update(service.settings.retry_delays_ms)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()
    await delete_namespace(
        settings.amqp_url.get_secret_value(),
        Names(settings.namespace),
        sorted(worker_names),
        sorted(delays),
    )


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    async with Publisher.from_settings(settings) as client:
        yield client


def consent_changed(
    subject_ref: str = "debtor-1",
    *,
    status: str = "granted",
    channel: str = "email",
    tenant_id: str = "acme",
    occurred_at: datetime | None = None,
    source: str = "web_form",
    reference: str = "form-1",
    **evidence: Any,
) -> ConsentChanged:
    return ConsentChanged(
        tenant_id=tenant_id,
        occurred_at=occurred_at or datetime.now(UTC),
        payload=ConsentChangedPayload(
            subject_ref=subject_ref,
            channel=channel,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            evidence=Evidence(reference=reference, **evidence),
        ),
    )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 20.0, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - polling the store and the broker
            await asyncio.sleep(interval)


async def drain_queue(url: str, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take every message currently in a queue (acknowledged, so it is removed)."""
    connection = await aio_pika.connect(url, timeout=5)
    taken = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


async def queue_depth(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        result = await channel.declare_queue(queue_name, passive=True)
        return int(result.declaration_result.message_count or 0)


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
