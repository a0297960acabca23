"""Issue 11, C7: an admin is who the broker says; every admin action reaches the audit.

Today's attack, replayed: ``PRIVACYOPS_OPERATOR=anyone PRIVACYOPS_DB_PATH=x.db dlq show
--reveal`` printed an ID number and left no trace in the real store. Now the operator is
the broker user the command authenticated as, ``--reveal`` needs ``--reason``, and the
action is published as ``admin.action``, which the service writes into its own audit log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from config.settings import Settings
from infra.headers import H_ERROR, H_ERROR_TYPE
from infra.runtime.service import Service
from messages.admin import AdminAction, AdminActionPayload
from messages.registry import encode
from tests.security.support import SA_ID, dead_letters, raw_publish, sql
from tests.support.helpers import BIN, consent_changed, queue_depth, wait_until
from workers.consent import ConsentWorker


def dlq(settings: Settings, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(settings, db, "dlq", *args, "--queue", "consent")


def cli(settings: Settings, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        "PRIVACYOPS_DB_PATH": str(db),
        "PRIVACYOPS_KEY_DIR": str(settings.key_dir),
        "PRIVACYOPS_DB_ENCRYPTION": settings.db_encryption,
        "PRIVACYOPS_LOG_FORMAT": "json",
        "PRIVACYOPS_OPERATOR": "anyone",  # no longer a setting: ignored
    }
    return subprocess.run(
        [str(BIN), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_reveal_from_another_store_reaches_the_service_audit(
    start_secured, secured: Settings, tmp_path: Path
) -> None:
    service: Service = await start_secured([ConsentWorker()], signing_keys_file=None)
    poisoned = encode(consent_changed("debtor-x")).replace(
        b'"reference":"form-1"', f'"reference":"{SA_ID}", "x": 1'.encode()
    )
    await raw_publish(secured, "consent.changed", poisoned)

    async def dead() -> bool:
        url = secured.amqp_url.get_secret_value()
        return await queue_depth(url, service.names.dlq("consent")) == 1

    await wait_until(dead)
    elsewhere = tmp_path / "elsewhere.db"  # the admin's own store, not the service's
    assert (await asyncio.to_thread(cli, secured, elsewhere, "db", "migrate")).returncode == 0
    listed = await asyncio.to_thread(dlq, secured, elsewhere, "list", "--json")
    [row] = json.loads(listed.stdout)["messages"]

    refused = await asyncio.to_thread(dlq, secured, elsewhere, "show", row["id"], "--reveal")
    assert refused.returncode == 2
    assert "--reason" in refused.stderr
    assert SA_ID not in refused.stdout

    shown = await asyncio.to_thread(
        dlq, secured, elsewhere, "show", row["id"], "--reveal", "--reason", "INC-7 triage"
    )
    assert shown.returncode == 0, shown.stderr
    assert SA_ID in shown.stdout

    async def audited() -> bool:
        rows = sql(
            secured,
            "SELECT actor, message_id, details FROM audit_log WHERE action = 'dlq_revealed'",
        )
        return len(rows) == 1

    await wait_until(audited)
    [(actor, message_id, details)] = sql(
        secured, "SELECT actor, message_id, details FROM audit_log WHERE action = 'dlq_revealed'"
    )
    assert actor == "operator:guest"  # the broker user, not PRIVACYOPS_OPERATOR
    assert message_id == row["id"]
    assert json.loads(details)["reason"] == "INC-7 triage"
    assert json.loads(details)["reported_via"] == "broker"


async def test_a_forged_admin_action_is_refused(start_secured, secured: Settings) -> None:
    service: Service = await start_secured([ConsentWorker()])
    forged = AdminAction(
        tenant_id="acme",
        payload=AdminActionPayload(action="dlq_purged", operator="alice", target_id="m-1"),
    )
    await raw_publish(
        secured,
        "admin.action",
        encode(forged),
        exchange=service.names.internal,
        user_id="guest",  # the broker only lets a connection name its own user
    )
    [dead] = await dead_letters(secured, "audit", 1)
    assert (dead.headers[H_ERROR_TYPE], dead.headers[H_ERROR]) == (
        "unauthorized",
        "admin.action not published by the operator it names",
    )
    assert not sql(secured, "SELECT 1 FROM audit_log WHERE action = 'dlq_purged'")
