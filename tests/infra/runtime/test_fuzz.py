"""Issue 14: any body, headers and properties against a running worker (hypothesis).

Each example is published raw on the events exchange with the consent worker's routing
key (or another), then followed until it is settled: applied (an inbox row) or
dead-lettered with a reason (``x-privacyops-error-type``, or the broker's ``x-death``
past the delivery limit). After every example the worker is still consuming. Valid
envelopes get a fresh message_id so that none is a duplicate.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any

import aio_pika
import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from infra.headers import H_ERROR_TYPE
from infra.runtime.service import Service
from messages.registry import encode
from tests.infra.dlq.support import adlq
from tests.support.db import connect
from tests.support.helpers import ServiceFactory, consent_changed, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240), pytest.mark.stores("sqlite")]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0)),
    st.decimals(places=2, min_value=Decimal(-1000), max_value=Decimal(1000)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
header_keys = st.one_of(
    st.sampled_from(
        [
            "x-privacyops-attempts",
            "x-privacyops-routing-key",
            "x-privacyops-error-type",
            "x-privacyops-key-id",
            "x-privacyops-signature",
            "x-privacyops-signed-at",
            "x-death",
        ]
    ),
    st.text(min_size=1, max_size=15),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELDS = ["type", "version", "tenant_id", "occurred_at", "payload", "schema", "extra"]
PAYLOAD = ["subject_ref", "status", "channel", "purpose", "source", "evidence", "extra"]


def envelope(changes: dict[str, Any], payload: dict[str, Any]) -> bytes:
    body = json.loads(encode(consent_changed(f"fuzz-{uuid.uuid4().hex[:8]}")))
    body.update(changes)
    if isinstance(body.get("payload"), dict):
        body["payload"].update(payload)
    return json.dumps(body).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        envelope,
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=2),
        st.dictionaries(st.sampled_from(PAYLOAD), json_values, max_size=2),
    ),
    st.just(b"").map(lambda _: envelope({}, {})),  # valid
    st.integers(min_value=1, max_value=20_000).map(lambda d: b"[" * d + b"]" * d),
)


@dataclass(frozen=True)
class Case:
    body: bytes
    routing_key: str
    headers: dict[str, Any]
    properties: dict[str, Any]


cases = st.builds(
    Case,
    body=bodies,
    routing_key=st.sampled_from(["consent.changed", "consent.changed", "consent.updated"]),
    headers=st.dictionaries(header_keys, values, max_size=5),
    properties=st.fixed_dictionaries(
        {},
        optional={
            "content_type": st.text(max_size=20),
            "content_encoding": st.text(max_size=10),
            "message_id": st.text(max_size=40),
            "correlation_id": st.text(max_size=40),
            "type": st.text(max_size=20),
            "app_id": st.text(max_size=20),
            "priority": st.integers(0, 9),
            "delivery_mode": st.sampled_from([1, 2]),
            "timestamp": st.datetimes(timezones=st.just(UTC)).map(
                lambda d: d.replace(microsecond=0)
            ),
        },
    ),
)


@dataclass
class Harness:
    settings: Settings
    service: Service
    channel: aiormq.abc.AbstractChannel
    connection: aio_pika.abc.AbstractConnection
    dead: int = 0
    skipped: int = 0

    def applied(self) -> int:
        with connect(self.settings.db_path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])

    async def publish(self, case: Case) -> bool:
        """True if the broker routed it to a queue (unroutable cases are returned)."""
        try:
            properties = aiormq.spec.Basic.Properties(headers=case.headers, **case.properties)
            await self.channel.basic_publish(
                case.body,
                exchange=self.service.names.events,
                routing_key=case.routing_key,
                properties=properties,
                mandatory=True,
                timeout=10,
            )
        except aiormq.exceptions.PublishError:
            return False
        except (TypeError, ValueError, OverflowError, UnicodeError, struct.error):
            self.skipped += 1  # the AMQP client cannot encode it: never reaches a worker
            return False
        return True

    async def take_dead(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        channel = await self.connection.channel()
        queue = await channel.get_queue(self.service.names.dlq("consent"), ensure=False)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            taken.append(message)
        await channel.close()
        return taken


@asynccontextmanager
async def harness_for(settings: Settings, service: Service) -> AsyncIterator[Harness]:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        underlay = await channel.get_underlay_channel()
        yield Harness(settings, service, underlay, connection)


@pytest.fixture
async def harness(start_service: ServiceFactory, settings: Settings) -> AsyncIterator[Harness]:
    async with harness_for(settings, await start_service(delivery_limit=3)) as ready:
        yield ready


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases)
async def test_any_message_is_applied_or_dead_lettered_with_a_reason(
    harness: Harness, case: Case
) -> None:
    before = harness.applied() + harness.dead
    if not await harness.publish(case):
        return
    if case.routing_key != "consent.changed":
        return  # routed to nothing the worker reads (bound for downstream systems)
    settled = before

    async def done() -> bool:
        nonlocal settled
        for message in await harness.take_dead():
            headers = message.headers or {}
            reason = headers.get(H_ERROR_TYPE) or headers.get("x-first-death-reason")
            assert reason, f"dead-lettered without a reason: {headers}"
            harness.dead += 1
        settled = harness.applied() + harness.dead
        return settled > before

    await wait_until(done, within=30, interval=0.02)
    assert settled == before + 1, case
    assert harness.service.ready, "the worker stopped"


@pytest.fixture
async def dlq_only(start_service: ServiceFactory, settings: Settings) -> AsyncIterator[Harness]:
    """The worker's queues declared, the worker stopped: the dead-letter queue is the tools'."""
    service = await start_service()
    await service.stop()
    async with harness_for(settings, service) as ready:
        yield ready


@settings(
    max_examples=1,  # each command is a process start-up; the codec fuzz runs many examples
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(cases, min_size=15, max_size=15))
async def test_the_dead_letter_tools_never_crash_on_any_message(
    dlq_only: Harness, batch: list[Case], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """list, show, replay --dry-run, export and purge --all over a queue of fuzzed letters."""
    h = dlq_only
    dlq = h.service.names.dlq("consent")
    placed = 0
    for case in batch:  # straight into the dead-letter queue, as a broker dead letter would be
        routed = Case(case.body, dlq, case.headers, case.properties)
        try:
            properties = aiormq.spec.Basic.Properties(headers=routed.headers, **routed.properties)
            await h.channel.basic_publish(
                routed.body, exchange="", routing_key=dlq, properties=properties, timeout=10
            )
            placed += 1
        except (TypeError, ValueError, OverflowError, UnicodeError, struct.error):
            continue
    s = h.settings
    listed = await adlq(s, "list", "--queue", "consent", "--json")
    assert listed.returncode in (0, 1), listed.stderr
    rows = json.loads(listed.stdout)["messages"]
    assert len(rows) == placed
    for row in rows[:1]:
        shown = await adlq(s, "show", row["id"], "--queue", "consent")
        assert shown.returncode == 0, shown.stderr
    dry = await adlq(s, "replay", "--all", "--dry-run", "--queue", "consent", "--json")
    assert dry.returncode in (0, 1), dry.stderr
    out = tmp_path_factory.mktemp("export") / "letters.jsonl"
    exported = await adlq(s, "export", str(out), "--queue", "consent")
    assert exported.returncode in (0, 1), exported.stderr
    purged = await adlq(s, "purge", "--all", "--yes", "--queue", "consent")
    assert purged.returncode in (0, 1), purged.stderr
    for result in (listed, dry, exported, purged):
        assert "Traceback" not in result.stderr
    assert not (await h.take_dead())
