"""Issue 11, B6 and E16: the workers over TLS, and the broker's message size limit.

A RabbitMQ node of the test's own (tests/support/rabbit_node.py: spare ports, its own node
name and directories, a TLS listener only, certificates from a throwaway trustme CA,
``max_message_size`` as in deploy/rabbitmq.conf) is started for this module and stopped
at its end. The machine's broker is not touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from config.settings import Settings
from infra import rabbit
from infra.headers import H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.errors import BrokerUnavailable
from messages.registry import encode
from tests.support.helpers import consent_changed, wait_until
from tests.support.rabbit_node import MAX_MESSAGE_SIZE, RabbitNode
from workers import registry
from workers.consent import ConsentWorker

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    started = RabbitNode(tls=True)
    try:
        started.start()
        yield started
    finally:
        started.close()


@pytest.fixture
def over_tls(settings: Settings, node: RabbitNode) -> Settings:
    return settings.with_changes(amqp_url=node.url, amqp_ca_file=node.ca_file)


async def test_workers_and_publishers_run_over_tls(over_tls: Settings, node: RabbitNode) -> None:
    service = Service(over_tls, [ConsentWorker()], schemas=registry.schemas())
    await service.start()
    try:
        async with Publisher.from_settings(over_tls) as publisher:
            await publisher.publish(consent_changed("debtor-tls"))
            # The body limit (64 KiB) is kept: a larger body passes the broker's limit and
            # is dead-lettered by privacyops as oversized.
            big = encode(consent_changed("debtor-big")) + b" " * 70_000  # valid JSON
            await publisher.publish_raw(big, "consent.changed")

        async def applied() -> bool:
            async with service.store.transaction() as tx:
                rows = await tx.fetchall("SELECT subject_ref FROM consent_state")
            return rows == [("debtor-tls",)]

        await wait_until(applied)
        connection = await rabbit.connect_with(over_tls)
        async with connection:
            channel = await connection.channel()
            dlq = await channel.get_queue(service.names.dlq("consent"), ensure=False)

            async def dead() -> bool:
                return (
                    await channel.declare_queue(dlq.name, passive=True)
                ).declaration_result.message_count == 1

            await wait_until(dead)
            message = await dlq.get(no_ack=True)
            assert message.headers[H_ERROR_TYPE] == "oversized"
    finally:
        await service.stop()


async def test_the_broker_refuses_messages_over_its_limit(over_tls: Settings) -> None:
    body = encode(consent_changed("debtor-huge")) + b" " * (MAX_MESSAGE_SIZE + 1024)
    assert len(body) > MAX_MESSAGE_SIZE
    async with Publisher.from_settings(over_tls) as publisher:
        with pytest.raises(BrokerUnavailable):
            await publisher.publish_raw(body, "consent.changed")


async def test_plain_amqp_and_an_unknown_ca_are_refused(node: RabbitNode) -> None:
    plain = node.url.replace("amqps://", "amqp://")
    with pytest.raises(BrokerUnavailable):
        await rabbit.connect(plain, 5)
    with pytest.raises(BrokerUnavailable):  # the system's CAs do not know the test CA
        await rabbit.connect(node.url, 5)
    context = rabbit.tls_context(node.ca_file)
    connection = await rabbit.connect(node.url, 5, ssl_context=context)
    await connection.close()
    assert aio_pika


def test_the_deployed_broker_limit_is_the_one_tested() -> None:
    """deploy/rabbitmq.conf (mounted by compose) sets the limit this module's node runs with,
    above the 64 KiB body limit plus room for dead-letter headers."""
    conf = (Path(__file__).parents[2] / "deploy" / "rabbitmq.conf").read_text()
    [size] = re.findall(r"^max_message_size\s*=\s*(\d+)\s*$", conf, re.MULTILINE)
    assert int(size) == MAX_MESSAGE_SIZE
    body_limit = Settings.model_fields["max_body_bytes"].default
    assert body_limit == 64 * 1024
    assert body_limit + 16 * 1024 <= MAX_MESSAGE_SIZE
