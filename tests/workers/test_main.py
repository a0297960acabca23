"""The privacyops command line, run as users run it (a subprocess with the environment)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from config.settings import Settings
from messages.names import Names
from messages.registry import encode
from tests.support.helpers import (
    BIN,
    consent_changed,
    delete_namespace,
    drain_queue,
    queue_depth,
    run_cli,
)


@pytest.fixture
async def declared(settings: Settings):
    result = run_cli(settings, "topology", "declare")
    assert result.returncode == 0, result.stderr
    yield Names(settings.namespace)
    await delete_namespace(
        settings.amqp_url.get_secret_value(),
        Names(settings.namespace),
        ["consent"],
        settings.retry_delays_ms,
    )


async def test_topology_declare_is_idempotent(settings: Settings, declared: Names) -> None:
    again = run_cli(settings, "topology", "declare")
    assert again.returncode == 0, again.stderr
    listed = subprocess.run(  # noqa: ASYNC221 - a one-off admin query
        ["rabbitmqctl", "-q", "list_queues", "name", "type", "arguments"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    ours = {line.split("\t")[0]: line for line in listed.splitlines() if settings.namespace in line}
    assert set(ours) == {
        declared.queue("consent"),
        declared.dlq("consent"),
        declared.unrouted,
        *(declared.retry_queue("consent", d) for d in settings.retry_delays_ms),
        # the runtime's audit consumer (admin.action), declared with every topology
        declared.queue("audit"),
        declared.dlq("audit"),
        *(declared.retry_queue("audit", d) for d in settings.retry_delays_ms),
    }
    assert all("\tquorum\t" in line for line in ours.values())
    assert "at-least-once" in ours[declared.queue("consent")]
    assert "x-message-ttl" in ours[declared.retry_queue("consent", 50)]


async def test_publish_valid_messages(settings: Settings, declared: Names) -> None:
    messages = [consent_changed(f"debtor-{i}") for i in range(3)]
    lines = "\n".join(encode(m).decode() for m in messages)
    result = run_cli(settings, "publish", "-", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert "published 3 message(s)" in result.stdout
    taken = await drain_queue(settings.amqp_url.get_secret_value(), declared.queue("consent"))
    assert sorted(m.body for m in taken) == sorted(encode(m) for m in messages)


GOOD = encode(consent_changed()).decode()


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("{broken", "not valid JSON"),
        (f'[{GOOD}, {{"type": "consent.changed", "tenant_id": "acme"}}]', "message 2: invalid"),
        (f'{GOOD}\n{{"type": "nope"}}', "message 2: unknown_type"),
        (GOOD.replace('"acme"', '"Not Valid"'), "message 1: invalid: tenant_id"),
    ],
)
async def test_publish_refuses_invalid_input(
    settings: Settings, declared: Names, stdin: str, expected: str
) -> None:
    result = run_cli(settings, "publish", "-", stdin=stdin)
    assert result.returncode == 2
    assert expected in result.stderr
    depth = await queue_depth(settings.amqp_url.get_secret_value(), declared.queue("consent"))
    assert depth == 0, "nothing may be published when any message is invalid"


async def test_publish_refuses_outbound_types(settings: Settings, declared: Names) -> None:
    from messages.consent import ConsentUpdated, ConsentUpdatedPayload

    changed = consent_changed()
    updated = ConsentUpdated(
        tenant_id="acme",
        payload=ConsentUpdatedPayload(
            subject_ref="debtor-1",
            channel=changed.payload.channel,
            purpose="direct_marketing",
            status=changed.payload.status,
            previous_status=None,
            effective_at=changed.occurred_at,
            source=changed.payload.source,
            cause_message_id=changed.message_id,
        ),
    )
    result = run_cli(settings, "publish", "-", stdin=encode(updated).decode())
    assert result.returncode == 2
    assert "published by privacyops only" in result.stderr


def test_schema_writes_the_contract(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(settings, "schema", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "asyncapi.json").read_text())
    assert document["asyncapi"] == "3.0.0"
    assert (tmp_path / "schemas" / "consent.changed.json").exists()


def test_invalid_settings_exit_2(settings: Settings) -> None:
    bad = settings.with_changes()
    env_result = subprocess.run(
        [str(BIN), "schema", "--out", "/tmp"],
        env={**os.environ, "PRIVACYOPS_PREFETCH": "0", "PRIVACYOPS_NAMESPACE": bad.namespace},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert env_result.returncode == 2
    assert "prefetch" in env_result.stderr
