"""Issue 11, B5: one broker user per role, least privilege, checked on the real broker.

``privacyops broker users`` writes a definitions file; the test imports it with
``rabbitmqctl import_definitions`` under unique user names and deletes the users at
the end. Then, connected as each account: a publisher cannot read a dead-letter
queue, publish on the internal exchange, declare a queue or publish a type upstream
may not send; nobody can forge the AMQP ``user_id``; a worker configured with
``publisher_users`` refuses a message published by any other account.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import pytest

from config.settings import Settings
from infra.headers import H_ERROR, H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.registry import encode
from tests.security.support import dead_letters, sql
from tests.support.helpers import BIN, consent_changed, wait_until
from workers.consent import ConsentWorker

REFUSED = (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelClosed)


def rabbitmqctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def accounts(settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The three accounts, created on the broker for this test only, then deleted."""
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    definitions, passwords = tmp_path / "defs.json", tmp_path / "passwords.json"
    env = {
        **os.environ,
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        "PRIVACYOPS_KEY_DIR": str(settings.key_dir),
    }
    made = subprocess.run(
        [
            str(BIN),
            "broker",
            "users",
            "--prefix",
            prefix,
            "--definitions",
            str(definitions),
            "--passwords",
            str(passwords),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert passwords.stat().st_mode & 0o777 == 0o600
    names = list(json.loads(passwords.read_text()))
    text = definitions.read_text()
    assert not any(p["password"] in text for p in json.loads(passwords.read_text()).values())
    try:
        # rabbitmqctl runs as the broker's own user: hand it a readable copy (hashes only),
        # deleted at once; the file the command wrote stays 0600.
        handle, copy = tempfile.mkstemp(suffix=".json")
        try:
            os.write(handle, text.encode())
            os.close(handle)
            os.chmod(copy, 0o644)
            imported = rabbitmqctl("import_definitions", copy)
        finally:
            os.unlink(copy)
        assert imported.returncode == 0, imported.stderr
        found = json.loads(passwords.read_text())
        yield {
            info["role"]: {"user": name, "password": info["password"]}
            for name, info in found.items()
        }
    finally:
        for name in names:
            rabbitmqctl("delete_user", name)


def url_for(account: dict[str, str]) -> str:
    return f"amqp://{quote(account['user'])}:{quote(account['password'])}@127.0.0.1:5672/"


@pytest.fixture
async def topology(start_service) -> Service:
    return await start_service([ConsentWorker()])


async def connected(account: dict[str, str]) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(url_for(account), timeout=5)


async def test_a_publisher_cannot_read_dead_letters_publish_internally_or_declare(
    topology: Service, accounts: dict[str, Any], settings: Settings
) -> None:
    names = topology.names
    connection = await connected(accounts["publisher"])
    async with connection:
        channel = await connection.channel()
        with pytest.raises(REFUSED):
            dlq = await channel.get_queue(names.dlq("consent"), ensure=False)
            await dlq.get(no_ack=True, fail=False)

        channel = await connection.channel(publisher_confirms=True)
        internal = await channel.get_exchange(names.internal, ensure=False)
        with pytest.raises(REFUSED):
            await internal.publish(aio_pika.Message(b"{}"), routing_key="notice.send")

        channel = await connection.channel()
        with pytest.raises(REFUSED):
            await channel.declare_queue(f"{settings.namespace}.stolen", durable=True)

        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(names.events, ensure=False)
        with pytest.raises(REFUSED):  # topic permission: only the inbound types
            await events.publish(aio_pika.Message(b"{}"), routing_key="consent.updated")

        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(names.events, ensure=False)
        with pytest.raises(REFUSED):  # the broker checks user_id against the login
            await events.publish(
                aio_pika.Message(b"{}", user_id="someone-else"), routing_key="consent.changed"
            )


async def test_the_admin_reads_dead_letters_and_the_publisher_publishes(
    topology: Service, accounts: dict[str, Any], settings: Settings
) -> None:
    names = topology.names
    publisher = Publisher(url_for(accounts["publisher"]), namespace=settings.namespace)
    async with publisher:
        await publisher.publish_raw(b"not json", "consent.changed")  # allowed, dead-lettered
    await wait_until(lambda: _depth(settings, names.dlq("consent"), 1))
    connection = await connected(accounts["admin"])
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(names.dlq("consent"), ensure=False)
        message = await dlq.get(no_ack=False, fail=False)
        assert message is not None
        assert message.headers["x-privacyops-error-type"] == "undecodable"
        await message.nack(requeue=True)
        channel = await connection.channel()
        with pytest.raises(REFUSED):  # an admin reads dead letters, not the work queue
            work = await channel.get_queue(names.queue("consent"), ensure=False)
            await work.get(no_ack=True, fail=False)


async def _depth(settings: Settings, queue: str, n: int) -> bool:
    from tests.support.helpers import queue_depth

    return await queue_depth(settings.amqp_url.get_secret_value(), queue) >= n


async def test_workers_check_the_publishing_broker_user(
    start_service, accounts: dict[str, Any], settings: Settings
) -> None:
    publisher_user = accounts["publisher"]["user"]
    await start_service([ConsentWorker()], publisher_users=[publisher_user])
    allowed = Publisher(url_for(accounts["publisher"]), namespace=settings.namespace)
    async with allowed:
        await allowed.publish(consent_changed("debtor-allowed"))
    guest = Publisher(settings.amqp_url.get_secret_value(), namespace=settings.namespace)
    async with guest:  # the guest account is not a publisher account
        await guest.publish(consent_changed("debtor-guest"))
    [dead] = await dead_letters(settings, "consent", 1)
    assert (dead.headers[H_ERROR_TYPE], dead.headers[H_ERROR]) == (
        "unauthorized",
        "published by a broker user that may not publish events",
    )

    async def applied() -> bool:
        return sql(settings, "SELECT subject_ref FROM consent_state") == [("debtor-allowed",)]

    await wait_until(applied)
    assert encode  # the body is the contract's, whoever publishes it
    await asyncio.sleep(0)
