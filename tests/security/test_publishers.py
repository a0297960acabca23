"""Issue 11, A (items 1-4) and E12: who may publish what, attacked on the real broker.

Every test runs a signed deployment (``secured``: a keyring, an SQLCipher store) and
publishes as an attacker with broker access would: plain aio-pika, someone else's key,
an old capture, a forged header.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from email import message_from_string, policy
from pathlib import Path

import pytest

from config.settings import Settings
from infra.headers import H_ERROR, H_ERROR_TYPE
from infra.runtime.service import Service
from messages import signing
from messages.errors import ProviderUnavailable, PublishRejected
from messages.registry import encode
from tests.security.support import (
    EMAIL,
    NEW_EMAIL,
    PHONE,
    access,
    dead_letters,
    plant_debtor,
    raw_publish,
    rectify_email,
    secret_of,
    sql,
    status_of,
    verified,
)
from tests.support.helpers import BIN, consent_changed, migrated_store, store_env, wait_until
from workers.consent import ConsentWorker
from workers.dsr import DsrWorker
from workers.notifier.handlers import NotifierWorker


@pytest.fixture
async def deployment(secured: Settings, start_secured) -> Service:
    async with migrated_store(secured):
        pass
    plant_debtor(secured, "acme", "debtor-1")
    return await start_secured(
        [DsrWorker(secured), NotifierWorker(secured), ConsentWorker()], outbox_poll_s=0.05
    )


def contact_email(settings: Settings) -> str:
    [(value,)] = sql(
        settings,
        "SELECT value FROM contact_points WHERE tenant_id = 'acme' AND subject_ref = 'debtor-1'"
        " AND kind = 'email'",
    )
    return str(value)


# -- 1. signing on by default ---------------------------------------------------------------


def test_run_refuses_to_start_without_signing_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PRIVACYOPS_KEY_DIR": str(tmp_path / "keys"),
        "PRIVACYOPS_DB_PATH": str(tmp_path / "store.db"),
        "PRIVACYOPS_METRICS_PORT": "0",
    }
    env.pop("PRIVACYOPS_ALLOW_UNSIGNED", None)
    refused = subprocess.run(
        [str(BIN), "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2
    assert "no publisher keyring" in refused.stderr
    assert "PRIVACYOPS_ALLOW_UNSIGNED" in refused.stderr

    made = subprocess.run(
        [str(BIN), "keys", "dev"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    keyring = tmp_path / "keys" / "signing-keys.json"
    assert keyring.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert json.loads(keyring.read_text())["keys"][0]["key_id"] == "dev"


async def test_the_issue_attack_unsigned_rectification_changes_nothing(
    deployment: Service, secured: Settings
) -> None:
    """An unsigned dsr.requested 'verified' rectification (plain aio-pika) is dead-lettered;
    the e-mail address stays, and a later access request's code cannot go to the attacker."""
    await raw_publish(
        secured, "dsr.requested", encode(rectify_email("r-attack", NEW_EMAIL, verified=True))
    )
    [dead] = await dead_letters(secured, "dsr", 1)
    assert dead.headers[H_ERROR_TYPE] == "signature_invalid"
    assert status_of(secured, "r-attack") is None
    assert contact_email(secured) == EMAIL


# -- 2. keys per publisher: scopes, rotation, routing key, replay window ------------------


async def test_a_key_is_held_to_its_tenants_and_types(
    deployment: Service, secured: Settings, publisher_for
) -> None:
    bravo = await publisher_for("bravo")  # bravo's key, acme's data
    await bravo.publish(consent_changed("debtor-1", tenant_id="acme"))
    verifier = await publisher_for("verifier")  # dsr.* only
    await verifier.publish(consent_changed("debtor-2"))
    portal = await publisher_for("portal")
    await portal.publish(consent_changed("debtor-3"))  # in scope: applied
    dead = await dead_letters(secured, "consent", 2)
    assert sorted((d.headers[H_ERROR_TYPE], d.headers[H_ERROR]) for d in dead) == [
        ("unauthorized", "the signing key may not send for this tenant"),
        ("unauthorized", "the signing key may not send this message type"),
    ]

    async def applied() -> bool:
        return sql(secured, "SELECT subject_ref FROM consent_state") == [("debtor-3",)]

    await wait_until(applied)
    audit = sql(secured, "SELECT details FROM audit_log WHERE action = 'consent_applied'")
    assert json.loads(audit[0][0])["signed_by"] == "portal"  # the audit names the publisher


async def test_two_keys_valid_at_once_and_an_expired_one_refused(
    deployment: Service, secured: Settings, publisher_for
) -> None:
    for key_id in ("portal", "portal-2"):  # rotation: old and new both accepted
        client = await publisher_for(key_id)
        await client.publish(consent_changed(f"debtor-{key_id}"))
    retired = await publisher_for("retired")
    await retired.publish(consent_changed("debtor-retired"))
    forged = await publisher_for("portal", secret="guessed-" + "g" * 32)
    await forged.publish(consent_changed("debtor-forged"))
    dead = await dead_letters(secured, "consent", 2)
    assert sorted(d.headers[H_ERROR] for d in dead) == [
        "signature does not match the message",
        "signing key unknown or expired",
    ]

    async def both() -> bool:
        rows = sql(secured, "SELECT subject_ref FROM consent_state ORDER BY subject_ref")
        return rows == [("debtor-portal",), ("debtor-portal-2",)]

    await wait_until(both)


async def test_the_signature_covers_the_routing_key(deployment: Service, secured: Settings) -> None:
    """A body signed for one routing key is refused under another."""
    body = encode(consent_changed("debtor-moved"))
    now = int(time.time())
    headers = signing.headers(body, "dsr.requested", "portal", secret_of("portal"), now)
    await raw_publish(secured, "consent.changed", body, headers)
    [dead] = await dead_letters(secured, "consent", 1)
    assert dead.headers[H_ERROR] == "signature does not match the message"


async def test_an_old_capture_is_refused_until_an_admin_replays_it(
    deployment: Service, secured: Settings
) -> None:
    message = consent_changed("debtor-captured")
    body = encode(message)
    old = int(time.time()) - int(secured.replay_window_s) - 60
    headers = signing.headers(body, "consent.changed", "portal", secret_of("portal"), old)
    await raw_publish(secured, "consent.changed", body, headers)
    await wait_until(
        lambda: _depth_at_least(secured, f"{secured.namespace}.consent.dlq", 1), within=20
    )
    assert not sql(secured, "SELECT 1 FROM consent_state")
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": secured.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": secured.namespace,
        **store_env(secured),
        "PRIVACYOPS_KEY_DIR": str(secured.key_dir),
        "PRIVACYOPS_DB_ENCRYPTION": "sqlcipher",
        "PRIVACYOPS_LOG_FORMAT": "json",
    }

    def dlq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), "dlq", *args, "--queue", "consent"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    shown = await asyncio.to_thread(dlq, "list", "--json")
    [row] = json.loads(shown.stdout)["messages"]
    assert row["error_type"] == "signature_invalid"
    replayed = await asyncio.to_thread(dlq, "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr

    async def applied() -> bool:
        return bool(
            sql(secured, "SELECT 1 FROM consent_state WHERE subject_ref = 'debtor-captured'")
        )

    await wait_until(applied)


async def _depth_at_least(settings: Settings, queue: str, n: int) -> bool:
    from tests.support.helpers import queue_depth

    return await queue_depth(settings.amqp_url.get_secret_value(), queue) >= n


class FlakyConsent(ConsentWorker):
    """Fails each message's first attempt (retryable), so it comes back via a retry tier."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    async def changed(self, message, effects) -> None:  # type: ignore[no-untyped-def]
        if str(message.message_id) not in self.seen:
            self.seen.add(str(message.message_id))
            raise ProviderUnavailable("first attempt fails")
        await super().changed(message, effects)


async def test_a_signed_message_retried_through_the_internal_exchange_still_verifies(
    start_secured, secured: Settings, publisher_for
) -> None:
    """The retry comes back on ns.internal under the worker's key; the signature is checked
    against the original routing key (x-privacyops-routing-key) and not re-aged."""
    await start_secured([FlakyConsent()], replay_window_s=1)
    portal = await publisher_for("portal")
    await portal.publish(consent_changed("debtor-retried"))

    async def applied() -> bool:
        return sql(secured, "SELECT subject_ref FROM consent_state") == [("debtor-retried",)]

    await wait_until(applied)


# -- 3. verification is not self-asserted; the old address is told --------------------------


async def test_verification_is_honoured_only_from_a_key_allowed_to_assert_it(
    deployment: Service, secured: Settings, publisher_for
) -> None:
    portal = await publisher_for("portal")
    await portal.publish(rectify_email("r-1", NEW_EMAIL, verified=True))

    async def waiting() -> bool:
        return status_of(secured, "r-1") == "awaiting_verification"

    await wait_until(waiting)
    assert contact_email(secured) == EMAIL
    [(details,)] = sql(
        secured, "SELECT details FROM audit_log WHERE action = 'identity_assertion_ignored'"
    )
    assert json.loads(details) == {"request_id": "r-1", "signed_by": "portal"}

    await portal.publish(verified("r-1"))  # the portal may send dsr.*, but not assert this
    [dead] = await dead_letters(secured, "dsr", 1)
    assert dead.headers[H_ERROR] == "the signing key may not assert a verified identity"
    assert status_of(secured, "r-1") == "awaiting_verification"

    identity = await publisher_for("verifier")
    await identity.publish(verified("r-1"))

    async def done() -> bool:
        return status_of(secured, "r-1") == "completed"

    await wait_until(done)
    assert contact_email(secured) == NEW_EMAIL

    # The change is told to the OLD address (sealed in the outbox row, cleared once sent).
    async def told() -> bool:
        rows = sql(
            secured,
            "SELECT status, sealed FROM notification_outbox WHERE kind = 'contact_changed'",
        )
        return rows == [("sent", None)]

    await wait_until(told)
    mails = [p.read_text() for p in (secured.notify_dir / "email").glob("*.eml")]
    changed = [m for m in mails if "contact details were changed" in m]
    assert len(changed) == 1
    assert f"To: {EMAIL}" in changed[0]
    assert NEW_EMAIL not in changed[0]


async def test_a_changed_phone_number_is_told_to_the_old_number(
    deployment: Service, secured: Settings, publisher_for
) -> None:
    """Any contact point, not only e-mail: the old number gets an SMS, the new one none."""
    new_phone = "+27825550111"
    moved = rectify_email("r-phone", new_phone, verified=True, field="contact_points.phone")
    identity = await publisher_for("verifier")
    await identity.publish(moved)

    async def told() -> bool:
        rows = sql(
            secured,
            "SELECT channel, status FROM notification_outbox WHERE kind = 'contact_changed'",
        )
        return rows == [("sms", "sent")]

    await wait_until(told)
    [(phone,)] = sql(
        secured,
        "SELECT value FROM contact_points WHERE subject_ref = 'debtor-1' AND kind = 'phone'",
    )
    assert phone == new_phone
    [text] = [p.read_text() for p in (secured.notify_dir / "sms").glob("*.txt")]
    assert f"To: {PHONE}" in text
    assert new_phone not in text


# -- 4. internal types stay internal ---------------------------------------------------------


async def test_internal_types_cannot_be_published_on_the_events_exchange(
    deployment: Service, secured: Settings, publisher_for
) -> None:
    portal = await publisher_for("portal")
    body = b'{"type": "notice.send"}'
    with pytest.raises(PublishRejected):
        await portal.publish_raw(body, "notice.send")
    with pytest.raises(PublishRejected):
        await portal.publish_raw(body, "admin.action")


# -- E12. a malformed signature fails its own message only -----------------------------------


@pytest.mark.parametrize(
    "bad", ["v2=é" + "0" * 63, "v2=\u00ff\u00fe" * 10, ["v2=nested"], 12345, "sha256=" + "0" * 64]
)
async def test_a_malformed_signature_is_invalid_for_that_message_alone(
    deployment: Service, secured: Settings, publisher_for, bad: object
) -> None:
    good = await publisher_for("portal")
    body = encode(consent_changed("debtor-bad"))
    now = int(time.time())
    headers = signing.headers(body, "consent.changed", "portal", secret_of("portal"), now)
    headers[signing.SIGNATURE_HEADER] = bad
    await raw_publish(secured, "consent.changed", body, headers)
    await good.publish(consent_changed("debtor-good"))  # same batch window
    [dead] = await dead_letters(secured, "consent", 1)
    assert dead.headers[H_ERROR_TYPE] == "signature_invalid"

    async def applied() -> bool:
        return sql(secured, "SELECT subject_ref FROM consent_state") == [("debtor-good",)]

    await wait_until(applied)


async def test_access_code_goes_to_the_address_on_record(
    deployment: Service, secured: Settings, publisher_for
) -> None:
    identity = await publisher_for("verifier")
    await identity.publish(access("r-access"))

    async def sent() -> bool:
        rows = sql(
            secured, "SELECT status FROM notification_outbox WHERE kind = 'dsr_package_ready'"
        )
        return rows == [("sent",)]

    await wait_until(sent)
    texts = [p.read_text() for p in (secured.notify_dir / "email").glob("*.eml")]
    [mail] = [
        text
        for text in texts
        if "ready to collect" in str(message_from_string(text, policy=policy.default)["Subject"])
    ]
    assert f"To: {EMAIL}" in mail
