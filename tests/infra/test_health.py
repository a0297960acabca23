"""The ops endpoint: metrics move with the work, health follows the broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.names import Names
from messages.registry import encode
from tests.support.helpers import (
    consent_changed,
    delete_namespace,
    free_port,
    security_env,
    store_env,
    wait_until,
)
from tests.support.rabbit_node import RabbitNode
from workers import registry
from workers.consent import ConsentWorker

BIN = Path(sys.executable).parent / "privacyops"


async def get(port: int, path: str) -> tuple[int, str]:
    """One HTTP GET; (status, body). A refused connection is status 0."""
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
            writer.close()
    except OSError:
        return 0, ""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def served(settings: Settings):
    port = free_port()
    service = Service(
        settings.with_changes(
            metrics_port=port, metrics_host="127.0.0.1", dlq_depth_interval_s=0.1
        ),
        [ConsentWorker()],
        schemas=registry.schemas(),
        serve_ops=True,
    )
    await service.start()
    try:
        yield service, port
    finally:
        await service.stop()
        await delete_namespace(
            settings.amqp_url.get_secret_value(),
            Names(settings.namespace),
            ["consent"],
            settings.retry_delays_ms,
        )


async def test_metrics_move_and_probes_answer(served, publisher: Publisher) -> None:
    service, port = served
    assert await get(port, "/readyz") == (200, '{"consuming": true}\n')
    status, body = await get(port, "/healthz")
    assert (status, json.loads(body)) == (200, {"broker": True, "store": True})
    assert (await get(port, "/nope"))[0] == 404

    for i in range(5):
        await publisher.publish(consent_changed(f"debtor-{i}"))
    duplicate = consent_changed("debtor-dup")
    await publisher.publish(duplicate)
    await publisher.publish(duplicate)
    await publisher.publish_raw(b'{"type": "consent.changed", ', "consent.changed")
    bad = json.loads(encode(consent_changed("debtor-bad")))
    del bad["payload"]["status"]
    await publisher.publish_raw(json.dumps(bad).encode(), "consent.changed")

    labels = {"worker": "consent", "type": "consent.changed"}

    async def counted() -> bool:
        text = (await get(port, "/metrics"))[1]
        return (
            value(text, "privacyops_messages_processed_total", **labels) == 6
            and value(text, "privacyops_dead_letter_depth", worker="consent") == 2
        )

    await wait_until(counted)
    text = (await get(port, "/metrics"))[1]
    assert value(text, "privacyops_messages_duplicate_total", **labels) == 1
    assert value(text, "privacyops_handler_seconds_count", **labels) == 6
    assert value(text, "privacyops_batch_size_sum", worker="consent") == 9
    dead = "privacyops_messages_dead_lettered_total"
    assert value(text, dead, worker="consent", type="unknown", error="invalid") == 1
    assert value(text, dead, worker="consent", type="unknown", error="undecodable") == 1
    assert (
        value(
            text,
            "privacyops_messages_failed_total",
            worker="consent",
            type="unknown",
            error="undecodable",
        )
        == 1
    )
    assert service.ops is not None


async def test_probes_are_bounded_against_a_silent_client(served) -> None:
    """A client that connects and says nothing is dropped; others are still served."""
    _, port = served
    _, silent = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await get(port, "/readyz"))[0] == 200
    finally:
        silent.close()


# -- the broker going away (the suite's own node, never the machine's broker) -------------


@pytest.fixture
def broker_guard(rabbit_node: RabbitNode) -> Iterator[list[bool]]:
    """Backs up the test's ``finally``: the own node's application is started again."""
    stopped = [False]
    yield stopped
    if stopped[0]:
        rabbit_node.start_app()


async def broker_answers(url: str) -> None:
    async def answers() -> bool:
        try:
            connection = await aio_pika.connect(url, timeout=2)
        except Exception:  # noqa: BLE001 - still starting
            return False
        await connection.close()
        return True

    await wait_until(answers, within=120, interval=0.5)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_healthz_fails_while_the_broker_is_stopped(
    settings: Settings, rabbit_node: RabbitNode, broker_guard: list[bool]
) -> None:
    """``privacyops run`` as deployed: 503 while the broker is down, 200 once it is back."""
    settings = settings.with_changes(amqp_url=rabbit_node.url)
    port = free_port()
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        **store_env(settings),
        "PRIVACYOPS_METRICS_PORT": str(port),
        "PRIVACYOPS_METRICS_HOST": "127.0.0.1",
        **security_env(settings),
        "PRIVACYOPS_LOG_FORMAT": "json",
        "PRIVACYOPS_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms),
    }
    run = subprocess.Popen(  # noqa: ASYNC220 - a long-running process, stopped below
        [str(BIN), "run", "--migrate", "--worker", "consent"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = settings.amqp_url.get_secret_value()
    try:

        async def probe_is(path: str, status: int) -> None:
            async def answered() -> bool:
                return (await get(port, path))[0] == status

            await wait_until(answered, within=90, interval=0.2)

        await probe_is("/readyz", 200)
        await probe_is("/healthz", 200)
        try:
            broker_guard[0] = True
            await asyncio.to_thread(rabbit_node.stop_app)
            await probe_is("/healthz", 503)
            _, body = await get(port, "/healthz")
            assert json.loads(body) == {"broker": False, "store": True}
        finally:
            await asyncio.to_thread(rabbit_node.start_app)
            broker_guard[0] = False
        await broker_answers(url)
        await probe_is("/healthz", 200)  # the robust connection came back
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(run.wait, 30)
        except subprocess.TimeoutExpired:
            run.kill()
        await delete_namespace(
            url, Names(settings.namespace), ["consent"], settings.retry_delays_ms
        )
