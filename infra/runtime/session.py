"""One set-up of the store, the broker and the outbox relays, for the service and the CLI.

``session`` opens the store (built by ``open_store``, its schema checked or
migrated), and with ``broker=True`` connects, opens the confirmed publisher
channel and starts the outbox relays. It closes them in reverse order; a
failure while closing one is logged and the rest still close (STYLE 7). The
service runs its consumers inside a session; admin commands and sweeps run in
one so that the events they commit are published before they exit. The service
starts the relays itself (``start_relays=False``) once its queues are declared,
so that a notice is never published before the queue that takes it exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from aio_pika.abc import AbstractRobustConnection

from config.settings import Settings
from infra import rabbit
from infra.audit.tables import AUDIT_CHAIN
from infra.keys import Keys
from infra.redaction import describe_error
from infra.runtime.outbox import Outboxes
from infra.runtime.tables import RUNTIME
from infra.store import Store, migrations, open_store
from infra.store.migrations import Schema
from messages.names import Names

log = structlog.get_logger("privacyops.session")


@dataclass
class Session:
    """What a process holds while it works: the store, and the broker when asked for."""

    settings: Settings
    store: Store
    names: Names
    keys: Keys
    connection: AbstractRobustConnection | None = None
    publisher: rabbit.ConfirmedPublisher | None = None
    outboxes: Outboxes | None = None

    def require_broker(self) -> tuple[AbstractRobustConnection, rabbit.ConfirmedPublisher]:
        assert self.connection is not None, "opened without broker=True"
        assert self.publisher is not None, "opened without broker=True"
        return self.connection, self.publisher


def all_schemas(schemas: Sequence[Schema]) -> list[Schema]:
    """The runtime's schema first, the audit chain's on its table, then the given
    components', each once."""
    return migrations.unique([RUNTIME, AUDIT_CHAIN, *schemas])


@asynccontextmanager
async def session(
    settings: Settings,
    schemas: Sequence[Schema],
    *,
    broker: bool = False,
    notices: bool = False,
    migrate: bool = False,
    start_relays: bool = True,
) -> AsyncIterator[Session]:
    """Open what is asked for, yield it, close it in reverse order (see the module docstring)."""
    async with AsyncExitStack() as stack:
        store = open_store(settings)
        await store.open()
        stack.push_async_callback(closing("store", store.close, settings.shutdown_drain_s))
        components = all_schemas(schemas)
        if migrate:
            for component, step in await migrations.migrate(store, components):
                log.info("store_migrated", component=component, version=step.version)
        else:
            await migrations.check(store, components)
        current = Session(settings, store, Names(settings.namespace), Keys.from_settings(settings))
        if broker:
            await _connect(current, stack, notices, start_relays)
        yield current


async def _connect(
    current: Session, stack: AsyncExitStack, notices: bool, start_relays: bool
) -> None:
    s = current.settings
    current.connection = await rabbit.connect_with(s)
    stack.push_async_callback(closing("broker", current.connection.close, s.shutdown_drain_s))
    channel = await rabbit.open_channel(current.connection, confirms=True)
    current.publisher = rabbit.ConfirmedPublisher(
        channel, s.publish_timeout_s, user_id=rabbit.url_user(s.amqp_url.get_secret_value())
    )
    outboxes = Outboxes.build(s, current.store, current.publisher, current.names, notices=notices)
    if start_relays:
        await outboxes.start()
    # The relays drain within the deadline themselves; the extra second bounds the cancel.
    stop_relays = closing(
        "outbox_relays", lambda: outboxes.stop(s.shutdown_drain_s), s.shutdown_drain_s + 1
    )
    stack.push_async_callback(stop_relays)
    current.outboxes = outboxes


def closing(
    name: str, close: Callable[[], Awaitable[Any]], within: float
) -> Callable[[], Awaitable[None]]:
    """``close`` within ``within`` seconds; a failure or a timeout is logged, not raised,
    so the rest still close (STYLE 6, 7)."""

    async def guarded() -> None:
        try:
            async with asyncio.timeout(within):
                await close()
        except Exception as exc:  # noqa: BLE001 - keep closing the rest (STYLE 7)
            log.error(
                "close_failed",
                resource=name,
                error_type=type(exc).__name__,
                error=describe_error(exc),
            )

    return guarded
