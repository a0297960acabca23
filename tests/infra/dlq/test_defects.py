"""Issue 14, section 2: the dead-letter tools against what a new user met on main.

* A dead letter is found by the envelope's ``message_id`` (the id upstream knows), the
  AMQP property (filled with a random id by aiormq when a publisher leaves it unset) shown
  beside it; the admin's audit row carries the envelope's id, so it joins with the inbox.
* Deeply nested JSON in a dead-letter queue does not make list, show, replay --dry-run or
  purge --all crash (RecursionError): the queue stays manageable.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from config.settings import Settings
from infra.publisher import Publisher
from messages.registry import encode
from tests.infra.dlq.support import adlq, depth_reaches, rows
from tests.support.helpers import ServiceFactory, consent_changed

pytestmark = [pytest.mark.timeout(180), pytest.mark.stores("sqlite")]


async def test_dead_letters_are_found_and_audited_by_the_envelope_id(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service(tenants=["acme"])
    message = consent_changed("debtor-unknown-tenant", tenant_id="bravo")  # invalid: tenant
    await publisher.publish_raw(encode(message), message.type)  # no AMQP message_id given
    envelope_id = str(message.message_id)
    await depth_reaches(settings, service.names.dlq("consent"), 1)

    listed = await adlq(settings, "list", "--queue", "consent", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["messages"]
    assert row["id"] == envelope_id
    amqp_id = row["amqp_message_id"]
    assert amqp_id
    assert amqp_id != envelope_id
    table = await adlq(settings, "list", "--queue", "consent")
    assert envelope_id in table.stdout
    assert amqp_id in table.stdout

    for wanted in (envelope_id, amqp_id):  # either id finds it
        shown = await adlq(settings, "show", wanted, "--queue", "consent", "--json")
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert (view["id"], view["amqp_message_id"]) == (envelope_id, amqp_id)

    purged = await adlq(settings, "purge", envelope_id, "--queue", "consent", "--yes")
    assert purged.returncode == 0, purged.stderr
    audited = rows(settings.db_path, "SELECT message_id FROM audit_log WHERE action = 'dlq_purged'")
    assert audited == [(envelope_id,)]
    await depth_reaches(settings, service.names.dlq("consent"), 0)


def nested(depth: int) -> bytes:
    """A signed-looking envelope whose payload nests ``depth`` lists deep."""
    message = json.loads(encode(consent_changed("debtor-deep")))
    message["message_id"] = str(uuid.uuid4())
    text = json.dumps(message)
    deep = '"payload": {"deep": ' + "[" * depth + "]" * depth + ", "
    return text.replace('"payload": {', deep).encode()


async def test_deeply_nested_json_does_not_break_the_tools(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, tmp_path: Path
) -> None:
    service = await start_service()
    bodies = [
        b"[" * 30_000 + b"]" * 30_000,  # deeper than json can parse
        nested(900),  # parses, but deeper than a recursive walk can mask
        b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
    ]
    for body in bodies:
        assert len(body) < settings.max_body_bytes
        await publisher.publish_raw(body, "consent.changed")
    dlq = service.names.dlq("consent")
    await depth_reaches(settings, dlq, len(bodies))

    listed = await adlq(settings, "list", "--queue", "consent", "--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)["messages"]
    assert len(found) == len(bodies)
    # the envelope's id where the body gives one, else the AMQP property
    assert json.loads(bodies[1])["message_id"] in {r["id"] for r in found}
    assert (await adlq(settings, "list", "--queue", "consent")).returncode == 0
    for row in found:
        shown = await adlq(settings, "show", row["id"], "--queue", "consent")
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
    dry = await adlq(settings, "replay", "--all", "--dry-run", "--queue", "consent", "--json")
    assert dry.returncode == 0, dry.stderr
    assert len(json.loads(dry.stdout)["would_replay"]) == len(bodies)
    exported = await adlq(settings, "export", str(tmp_path / "deep.jsonl"), "--queue", "consent")
    assert exported.returncode == 0, exported.stderr
    await depth_reaches(settings, dlq, len(bodies))  # dry run and export keep them all
    purged = await adlq(settings, "purge", "--all", "--yes", "--queue", "consent")
    assert purged.returncode == 0, purged.stderr
    assert "Traceback" not in purged.stderr
    await depth_reaches(settings, dlq, 0)
