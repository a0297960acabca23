"""Issue 14: the network between the worker and its broker fails (tests/support/tcp_proxy.py).

* **Cut, then back**: the worker's only address goes through a proxy; the link is cut
  mid-stream for a few seconds and restored: the worker is consuming again within 10 s
  of the link returning; every message is applied exactly once.
* **Several addresses**: the worker's first address dies for good; the robust connection
  takes up the next one (``PRIVACYOPS_AMQP_URLS``, ``infra.rabbit.FailoverConnection``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import pytest

from bench.faultkit.tcp_proxy import TcpProxy
from config.settings import Settings
from infra import rabbit
from infra.publisher import Publisher
from messages.consent import ConsentChanged
from tests.support.db import connect
from tests.support.helpers import ServiceFactory, consent_changed, queue_depth, wait_until
from tests.support.rabbit_node import spare_port

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120), pytest.mark.stores("sqlite")]

RECOVERY_S = 10.0


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    target = urlsplit(settings.amqp_url.get_secret_value())
    started = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


def inbox_ids(settings: Settings) -> list[str]:
    with connect(settings.db_path) as conn:
        return [row[0] for row in conn.execute("SELECT message_id FROM inbox")]


async def applied(settings: Settings, messages: Sequence[ConsentChanged], within: float) -> float:
    """Wait until every message is in the inbox; the seconds it took."""
    wanted = {str(m.message_id) for m in messages}
    started = time.monotonic()

    async def done() -> bool:
        return wanted <= set(inbox_ids(settings))

    await wait_until(done, within=within, interval=0.05)
    return time.monotonic() - started


async def publish(publisher: Publisher, messages: Sequence[ConsentChanged]) -> None:
    for message in messages:
        await publisher.publish(message)


async def test_link_cut_mid_stream_then_back(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, proxy: TcpProxy
) -> None:
    service = await start_service(
        amqp_url=proxy.url_for(settings.amqp_url.get_secret_value()),
        batch_window_ms=20,
        batch_max=20,
        reconnect_interval_s=1.0,
    )
    before = [consent_changed(f"before-{i:03d}") for i in range(600)]
    during = [consent_changed(f"during-{i:03d}") for i in range(200)]
    after = [consent_changed(f"after-{i:03d}") for i in range(50)]
    await publish(publisher, before)  # over the direct link: the test's own
    await wait_until(lambda: _some(settings), within=30, interval=0.02)
    await proxy.cut()
    assert len(inbox_ids(settings)) < len(before), "the cut should land mid-stream"
    await publish(publisher, during)  # they wait in the queue
    await asyncio.sleep(3)
    await proxy.restore()
    await publish(publisher, after)
    took = await applied(settings, after, within=60)
    assert took < RECOVERY_S, f"consuming again {took:.1f} s after the link returned"
    await applied(settings, [*before, *during], within=30)
    ids = inbox_ids(settings)
    assert len(ids) == len(set(ids)) == len(before) + len(during) + len(after)
    url = settings.amqp_url.get_secret_value()
    assert await queue_depth(url, service.names.dlq("consent")) == 0
    assert proxy.accepted >= 2  # it did reconnect through the proxy


async def _some(settings: Settings) -> bool:
    return len(inbox_ids(settings)) >= 50


async def test_first_address_dead_at_start_the_next_is_used(settings: Settings) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{spare_port()}/"
    good = settings.amqp_url.get_secret_value()
    connection = await rabbit.connect([dead, good], 5)
    try:
        assert not connection.is_closed
        assert str(connection.url.port) == str(urlsplit(good).port)
    finally:
        await connection.close()


async def test_failover_to_the_next_address_when_the_first_dies(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, proxy: TcpProxy
) -> None:
    direct = settings.amqp_url.get_secret_value()
    via_proxy = proxy.url_for(direct)
    service = await start_service(
        amqp_url=via_proxy, amqp_urls=[via_proxy, direct], reconnect_interval_s=1.0
    )
    first = [consent_changed(f"first-{i:03d}") for i in range(100)]
    await publish(publisher, first)
    await applied(settings, first, within=30)
    await proxy.cut()  # for good: the first address is gone
    cut_at = time.monotonic()
    second = [consent_changed(f"second-{i:03d}") for i in range(100)]
    await publish(publisher, second)
    await applied(settings, second, within=60)
    assert time.monotonic() - cut_at < RECOVERY_S
    ids = inbox_ids(settings)
    assert len(ids) == len(set(ids)) == len(first) + len(second)
    assert service.ready
