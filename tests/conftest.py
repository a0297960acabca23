"""Fixtures: the real RabbitMQ and a real store, unique names per test.

Each test gets its own namespace (so its own exchanges and queues) and its own
store: every test that takes ``settings`` runs twice, on a SQLite file and on a
PostgreSQL schema of its own (dropped afterwards); ``TEST_STORES=sqlite``
limits a local run to one. A test marked ``@pytest.mark.stores("sqlite")`` is about
one store only. If RabbitMQ or PostgreSQL does not answer, the tests fail with a
clear message: they never skip. Helpers shared by the tests live in ``tests/support``.
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
import pytest

from config.settings import Settings
from infra import logging as plog
from infra.publisher import Publisher
from infra.runtime.service import Service
from infra.runtime.worker import Worker
from messages.names import Names
from tests.support import db, sweep
from tests.support.helpers import AMQP_URL, ServiceFactory, delete_namespace
from tests.support.rabbit_node import RabbitNode
from workers import registry
from workers.consent import ConsentWorker


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


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    """A RabbitMQ node of the suite's own (spare ports, own name, data and cookie), for tests
    that stop, kill or cut the broker: the machine's broker is never stopped by a test.
    Started on first use; a test that stops its application starts it again."""
    node = RabbitNode(prefix="privacyops-own")
    try:
        node.start()
        yield node
    finally:
        node.close()


STORES = tuple(os.environ.get("TEST_STORES", "sqlite,postgresql").split(","))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes a store runs on each store (or those its ``stores`` mark names)."""
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = [k for k in (marker.args if marker else STORES) if k in STORES]
        metafunc.parametrize("store_kind", kinds)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        with psycopg.connect(db.PG_ADMIN_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {db.PG_ADMIN_URL} ({type(exc).__name__}); "
            "scripts/test starts the machine's cluster with pg_ctlcluster",
            pytrace=False,
        )
    return db.PG_ADMIN_URL


@pytest.fixture
def namespace() -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    sweep.NAMESPACES.add(name)
    return name


@pytest.fixture(scope="session", autouse=True)
def swept_broker() -> Iterator[None]:
    """At the end of the session, whatever the tests' namespaces left on the broker goes."""
    yield
    asyncio.run(sweep.sweep(AMQP_URL, sweep.NAMESPACES))


@pytest.fixture
def store_url(
    store_kind: str, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str | None]:
    """None for SQLite; for PostgreSQL, the URL of a schema made for this test alone."""
    if store_kind == "sqlite":
        yield None
        return
    admin = request.getfixturevalue("postgres_admin_url")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {namespace}")
    url = f"{admin}?search_path={namespace}"
    db.register(tmp_path / "store.db", url)
    yield url
    db.unregister(tmp_path / "store.db")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {namespace} CASCADE")


@pytest.fixture
def settings(amqp_url: str, namespace: str, tmp_path: Path, store_url: str | None) -> Settings:
    return Settings(
        amqp_url=amqp_url,
        namespace=namespace,
        store_url=store_url,
        db_path=tmp_path / "store.db",
        retry_delays_ms=[50, 100, 200],
        batch_window_ms=5,
        shutdown_drain_s=5,
        handler_timeout_s=5,
        connect_timeout_s=5,
        publish_timeout_s=5,
        log_format="json",
        # Keys of this test only; the suite's stores are plain so tests can read them with
        # sqlite3 (tests/security covers the encrypted store end to end).
        key_dir=tmp_path / "keys",
        db_encryption="none",
    )


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the real logging pipeline renders (redaction included), as JSON lines."""
    stream = io.StringIO()
    plog.configure("debug", "json", stream)
    yield stream
    plog.configure("info", "json")


@pytest.fixture
async def start_service(settings: Settings) -> AsyncIterator[ServiceFactory]:
    """Start a Service (default: the consent worker); stopped and cleaned up after the test."""
    started: list[Service] = []
    worker_names: set[str] = set()
    delays: set[int] = set(settings.retry_delays_ms)

    async def start(workers: list[Worker] | None = None, **overrides: Any) -> Service:
        chosen = settings.with_changes(**overrides)
        service = Service(chosen, workers or [ConsentWorker()], schemas=registry.schemas())
        worker_names.update(w.name for w in service.workers)
        delays.update(chosen.retry_delays_ms)
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
