"""``privacyops dlq`` against the real broker and store, run as admins run it (subprocess)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import pytest

from config.settings import Settings
from infra import rabbit, topology
from infra.dlq.codec import H_REPLAYED_BY, H_REPLAYS
from infra.headers import H_ATTEMPTS
from infra.publisher import Publisher
from infra.runtime.worker import Effects, Worker, handles
from messages.consent import ConsentChanged
from messages.envelope import Envelope
from messages.errors import ProviderUnavailable
from messages.names import Names
from messages.registry import encode
from tests.infra.dlq.support import adlq, cli_env, depth_reaches, rows
from tests.support.helpers import (
    BIN,
    ServiceFactory,
    consent_changed,
    delete_namespace,
    drain_queue,
    migrated_store,
    queue_depth,
    wait_until,
)

EMAIL, PHONE, SA_ID = "thandi.nkosi@example.co.za", "+27 82 555 0199", "8501015800084"
PLANTED = (EMAIL, PHONE, SA_ID, "82 555 0199")
#: The admin is the broker user the command authenticates as (issue 11, C7).
OPERATOR = "guest"


class FixableWorker(Worker):
    """Fails for subjects named crash-* (a bug) and down-* (provider down) until fixed."""

    name: ClassVar[str] = "fixable"

    def __init__(self) -> None:
        self.broken = True

    @handles(ConsentChanged)
    async def changed(self, message: ConsentChanged, effects: Effects) -> None:
        ref = message.payload.subject_ref
        if self.broken and ref.startswith("crash-"):
            raise KeyError(f"lookup failed for {EMAIL}")
        if self.broken and ref.startswith("down-"):
            raise ProviderUnavailable(f"provider down while calling {PHONE}")
        effects.audit("fixable_applied", ref)


async def listed(settings: Settings, *filters: str) -> list[dict[str, Any]]:
    result = await adlq(settings, "list", "--queue", "fixable", "--json", *filters)
    assert result.returncode in (0, 1), result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["messages"]
    return rows


def applied(db: Path) -> Counter[str]:
    found = rows(db, "SELECT message_id FROM audit_log WHERE action = 'fixable_applied'")
    return Counter(r[0] for r in found)


def assert_no_personal_data(*texts: str) -> None:
    for text in texts:
        for planted in PLANTED:
            assert planted not in text


def mixed_messages() -> dict[str, list[tuple[Envelope, bytes]]]:
    """100 messages that will be dead-lettered, by cause, with the bodies to publish."""

    def ok(m: Envelope) -> tuple[Envelope, bytes]:
        return m, encode(m)

    planted = {"reference": f"sms from {PHONE}", "wording": f"I, {EMAIL}, ID {SA_ID}"}
    undecodable = [consent_changed(f"trunc-{i}", **planted) for i in range(20)]
    return {
        "undecodable": [(m, encode(m)[:-7]) for m in undecodable],
        "invalid": [ok(consent_changed(f"bravo-{i}", tenant_id="bravo")) for i in range(20)],
        "handler_crashed": [ok(consent_changed(f"crash-{i}", **planted)) for i in range(30)],
        "provider_unavailable": [ok(consent_changed(f"down-{i}")) for i in range(30)],
    }


async def publish_mixed(publisher: Publisher, mixed: dict[str, list[tuple[Envelope, bytes]]]):
    for batch in mixed.values():
        for message, body in batch:
            await publisher.publish_raw(body, message.type, str(message.message_id))
    good = [consent_changed(f"ok-{i}") for i in range(10)]
    for message in good:
        await publisher.publish(message)
    return good


@pytest.mark.timeout(180)
async def test_dead_letters_listed_fixed_replayed_exactly_once_despite_a_killed_replay(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    worker = FixableWorker()
    service = await start_service([worker], tenants=["acme"])
    names, db = service.names, settings.db_path
    mixed = mixed_messages()
    good = await publish_mixed(publisher, mixed)
    await depth_reaches(settings, names.dlq("fixable"), 100)

    # -- list and filter: nothing lost, order kept, nothing personal shown ---------------
    first = await listed(settings)
    assert Counter(r["error_type"] for r in first) == {k: len(v) for k, v in mixed.items()}
    assert [r["id"] for r in await listed(settings)] == [r["id"] for r in first]
    assert await queue_depth(settings.amqp_url.get_secret_value(), names.dlq("fixable")) == 100
    assert len(await listed(settings, "--error", "invalid")) == 20
    assert len(await listed(settings, "--tenant", "bravo")) == 20
    assert (
        len(await listed(settings, "--type", "consent.*", "--error", "provider_unavailable")) == 30
    )
    assert all(
        r["attempts"] == 4 for r in await listed(settings, "--error", "provider_unavailable")
    )
    assert len(await listed(settings, "--since", "1h")) == 100
    none = await adlq(settings, "list", "--queue", "fixable", "--since", "2099-01-01")
    assert none.returncode == 0  # a query: nothing matched is an answer
    assert "no dead letter matched" in none.stdout
    table = await adlq(settings, "list", "--queue", "fixable")
    assert table.returncode == 0
    assert f"{names.dlq('fixable')}" in table.stdout
    assert "100 message(s) matched" in table.stdout
    assert_no_personal_data(json.dumps(first), table.stdout, table.stderr)

    # -- show masks; --reveal shows and is audited ----------------------------------------
    crash_id = str(mixed["handler_crashed"][0][0].message_id)
    shown = await adlq(settings, "show", crash_id, "--queue", "fixable", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["body"]["payload"]["subject_ref"] == "crash-0"
    assert view["body"]["payload"]["evidence"]["wording"] == "[redacted]"
    assert view["error_type"] == "handler_crashed"
    assert_no_personal_data(shown.stdout, shown.stderr)
    trunc_id = str(mixed["undecodable"][0][0].message_id)
    shown = await adlq(settings, "show", trunc_id, "--queue", "fixable")
    assert shown.returncode == 0
    assert_no_personal_data(shown.stdout)
    assert rows(db, "SELECT count(*) FROM audit_log WHERE action = 'dlq_revealed'") == [(0,)]
    revealed = await adlq(
        settings, "show", crash_id, "--queue", "fixable", "--reveal", "--reason", "INC-7 triage"
    )
    assert revealed.returncode == 0
    assert EMAIL in revealed.stdout
    assert rows(
        db, "SELECT actor, tenant_id, message_id FROM audit_log WHERE action = 'dlq_revealed'"
    ) == [(f"operator:{OPERATOR}", "acme", crash_id)]
    missing = await adlq(settings, "show", "no-such-id", "--queue", "fixable")
    assert missing.returncode == 1
    assert (await adlq(settings, "replay", "--queue", "fixable")).returncode == 2
    dry = await adlq(settings, "replay", "--queue", "fixable", "--all", "--dry-run")
    assert dry.returncode == 0
    assert "100 message(s) would replay" in dry.stdout

    # -- fix the causes ------------------------------------------------------------------
    # the bug and the provider: a new release
    worker.broken = False
    # the unknown tenant: onboarded, configuration deployed
    await service.stop()
    await start_service([worker], tenants=["acme", "bravo"])
    # the truncated bodies: export them, repair, purge the broken copies, import the repair
    export = tmp_path / "truncated.jsonl"
    result = await adlq(
        settings, "export", str(export), "--queue", "fixable", "--error", "undecodable"
    )
    assert result.returncode == 0, result.stderr
    assert export.stat().st_mode & 0o777 == 0o600
    originals = {str(m.message_id): encode(m) for m, _ in mixed["undecodable"]}
    records = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(records) == 20
    for record in records:
        record["body"] = base64.b64encode(originals[record["id"]]).decode()
    repaired = tmp_path / "repaired.jsonl"
    repaired.write_text("".join(json.dumps(r) + "\n" for r in records))
    purge = await adlq(settings, "purge", "--queue", "fixable", "--error", "undecodable", "--yes")
    assert purge.returncode == 0, purge.stderr
    assert (await adlq(settings, "import", str(repaired))).returncode == 0
    assert len(await listed(settings, "--error", "undecodable")) == 20
    assert all(r["type"] == "consent.changed" for r in await listed(settings, "--tenant", "acme"))

    # -- replay slowly and kill the replay in the middle ----------------------------------
    slow = subprocess.Popen(  # noqa: ASYNC220 - killed below, on purpose
        [str(BIN), "dlq", "replay", "--queue", "fixable", "--all", "--rate", "25"],
        env=cli_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def some_replayed() -> bool:
            return len(applied(db)) >= 15

        await wait_until(some_replayed, within=60)
    finally:
        slow.send_signal(signal.SIGKILL)
        await asyncio.to_thread(slow.wait, 10)
    assert len(applied(db)) < 100 + len(good), "the kill should land mid-replay"
    dead = await queue_depth(settings.amqp_url.get_secret_value(), names.dlq("fixable"))
    assert dead > 0

    # -- replay again: finishes the job, no double effect ---------------------------------
    again = await adlq(settings, "replay", "--queue", "fixable", "--all")
    assert again.returncode == 0, again.stderr
    assert_no_personal_data(again.stdout, again.stderr, purge.stdout, purge.stderr)
    expected = {str(m.message_id) for batch in mixed.values() for m, _ in batch}
    expected |= {str(m.message_id) for m in good}

    async def all_applied() -> bool:
        return set(applied(db)) == expected

    await wait_until(all_applied, within=60)
    assert max(applied(db).values()) == 1
    await depth_reaches(settings, names.dlq("fixable"), 0)
    await depth_reaches(settings, names.queue("fixable"), 0)
    replays = rows(
        db, "SELECT DISTINCT actor, message_id FROM audit_log WHERE action = 'dlq_replayed'"
    )
    assert {r[1] for r in replays} == expected - {str(m.message_id) for m in good}
    assert {r[0] for r in replays} == {f"operator:{OPERATOR}"}
    purged = rows(db, "SELECT tenant_id, actor FROM audit_log WHERE action = 'dlq_purged'")
    assert purged == [("acme", f"operator:{OPERATOR}")] * 20


async def test_purge_needs_confirmation_and_export_import_round_trip(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    worker = FixableWorker()
    service = await start_service([worker])
    crashing = [consent_changed(f"crash-{i}", wording=EMAIL) for i in range(3)]
    for message in crashing:
        await publisher.publish(message)
    queue = service.names.dlq("fixable")
    await depth_reaches(settings, queue, 3)
    db = settings.db_path

    refused = await adlq(settings, "purge", "--queue", "fixable", "--all")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert await queue_depth(settings.amqp_url.get_secret_value(), queue) == 3
    assert rows(db, "SELECT count(*) FROM audit_log WHERE actor LIKE 'operator:%'") == [(0,)]

    backup = tmp_path / "backup.jsonl"
    purged = await adlq(
        settings, "purge", "--queue", "fixable", "--all", "--yes", "--export", str(backup)
    )
    assert purged.returncode == 0, purged.stderr
    assert await queue_depth(settings.amqp_url.get_secret_value(), queue) == 0
    actions = Counter(
        (r[0], r[1], r[2])
        for r in rows(db, "SELECT action, actor, tenant_id FROM audit_log WHERE actor != ''")
    )
    assert actions == {
        ("dlq_exported", f"operator:{OPERATOR}", "acme"): 3,
        ("dlq_purged", f"operator:{OPERATOR}", "acme"): 3,
    }
    assert len(backup.read_text().splitlines()) == 3
    again = await adlq(settings, "purge", "--queue", "fixable", "--all", "--yes")
    assert again.returncode == 1  # nothing matched

    assert (await adlq(settings, "import", str(backup))).returncode == 0
    assert {r["id"] for r in await listed(settings)} == {str(m.message_id) for m in crashing}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"worker": "fixable"}\n')
    assert (await adlq(settings, "import", str(bad))).returncode == 2
    assert (await adlq(settings, "export", str(backup))).returncode == 2  # never overwrites

    # replay one by id to another target, fix nothing: it fails again, history kept
    one = str(crashing[0].message_id)
    replayed = await adlq(settings, "replay", one, "--queue", "fixable", "--to", "worker:fixable")
    assert replayed.returncode == 0, replayed.stderr

    async def back_again() -> bool:
        return any(r["replays"] == 1 for r in await listed(settings))

    await wait_until(back_again)
    [dead] = [
        m
        for m in await drain_queue(settings.amqp_url.get_secret_value(), queue)
        if m.message_id == one
    ]
    headers = dead.headers
    assert (headers[H_REPLAYS], headers[H_REPLAYED_BY], headers[H_ATTEMPTS]) == (1, OPERATOR, 1)
    assert_no_personal_data(json.dumps(headers, default=str))


async def test_broker_dead_letters_are_shown_and_replayed(
    settings: Settings, publisher: Publisher, start_service: ServiceFactory
) -> None:
    """A message past the delivery limit carries x-death, not our headers."""
    async with migrated_store(settings):
        pass  # the deployment's store, as `privacyops db migrate` leaves it
    url = settings.amqp_url.get_secret_value()
    names = Names(settings.namespace)
    connection = await rabbit.connect(url, 5)
    try:
        channel = await connection.channel()
        queues = await topology.declare(
            channel, names, {"fixable": FixableWorker.message_types()}, settings.retry_delays_ms, 1
        )
        message = consent_changed("debtor-poison")
        await publisher.publish(message)
        for _ in range(2):  # a process that crashes on it, twice
            raw = await queues["fixable"].get(timeout=5)
            await raw.reject(requeue=True)
        await depth_reaches(settings, names.dlq("fixable"), 1)
    finally:
        await connection.close()

    [row] = await listed(settings)
    assert (row["id"], row["source"], row["error_type"]) == (
        str(message.message_id),
        "broker",
        "delivery_limit",
    )
    [row] = await listed(settings)  # read twice: the broker's facts survive the cycle
    assert (row["source"], row["error_type"]) == ("broker", "delivery_limit")
    worker = FixableWorker()
    await start_service([worker], delivery_limit=1)
    assert (await adlq(settings, "replay", "--queue", "fixable", "--all")).returncode == 0

    async def done() -> bool:
        return str(message.message_id) in applied(settings.db_path)

    await wait_until(done)
    assert await queue_depth(url, names.dlq("fixable")) == 0


async def test_one_reader_per_queue(settings: Settings) -> None:
    """A second admin waits its turn instead of interleaving with a running cycle."""
    from infra.dlq.admin import DeadLetterAdmin
    from infra.store import open_store
    from messages.errors import BrokerUnavailable

    url = settings.amqp_url.get_secret_value()
    names = Names(settings.namespace)
    connection = await aio_pika.connect(url, timeout=5)
    store = open_store(settings)
    await store.open()
    try:
        channel = await connection.channel()
        await topology.declare(channel, names, {"fixable": ()}, settings.retry_delays_ms, 5)
        async with (
            DeadLetterAdmin(settings, store) as first,
            DeadLetterAdmin(settings, store) as second,
        ):
            async with first._locked("fixable"):
                with pytest.raises(BrokerUnavailable, match="another admin"):
                    async with second._locked("fixable"):
                        pass
            async with second._locked("fixable"):
                pass
    finally:
        await connection.close()
        await store.close()
        await delete_namespace(url, names, ["fixable"], settings.retry_delays_ms)
