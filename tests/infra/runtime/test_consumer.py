"""The runtime against the real broker: bad input, retries, dead letters, redaction."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aio_pika.abc import AbstractIncomingMessage

from config.settings import Settings
from infra.headers import (
    H_ATTEMPTS,
    H_ERROR,
    H_ERROR_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ROUTING_KEY,
    H_WORKER,
)
from infra.publisher import Publisher
from infra.runtime.service import Service
from infra.runtime.worker import Effects, Worker, handles
from messages.consent import ConsentChanged
from messages.errors import ProviderUnavailable
from messages.registry import MESSAGE_TYPES, encode
from tests.support.db import connect
from tests.support.helpers import (
    TEST_SECRET,
    ServiceFactory,
    consent_changed,
    drain_queue,
    log_lines,
    queue_depth,
    wait_until,
    write_keyring,
)
from workers.consent import ConsentWorker

EMAIL, PHONE, SA_ID = "thandi.nkosi@example.co.za", "+27 82 555 0199", "8501015800084"
PLANTED = (EMAIL, PHONE, SA_ID, "82 555 0199", "555 0199")


class FlakyWorker(Worker):
    """Fails with a retryable error ``failures`` times per message, then applies it."""

    name: ClassVar[str] = "flaky"

    def __init__(self, failures: int, crash: bool = False) -> None:
        self.failures = failures
        self.crash = crash
        self.calls: Counter[str] = Counter()

    @handles(ConsentChanged)
    async def changed(self, message: ConsentChanged, effects: Effects) -> None:
        key = str(message.message_id)
        self.calls[key] += 1
        if self.crash:
            raise KeyError(f"lookup failed for {EMAIL} / {SA_ID}")
        if self.calls[key] <= self.failures:
            raise ProviderUnavailable(f"provider down while mailing {EMAIL} at {PHONE}")
        effects.audit("flaky_applied", message.payload.subject_ref)


def count(db: Any, sql: str) -> int:
    with connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def dead_letters(settings: Settings, service: Service, worker: str, n: int) -> list[Any]:
    url = settings.amqp_url.get_secret_value()
    name = service.names.dlq(worker)

    async def arrived() -> bool:
        return await queue_depth(url, name) >= n

    await wait_until(arrived)
    return await drain_queue(url, name)


def assert_no_personal_data(*texts: str) -> None:
    for text in texts:
        for planted in PLANTED:
            assert planted not in text


def headers_text(messages: list[AbstractIncomingMessage]) -> str:
    return json.dumps([m.headers for m in messages], default=str)


async def test_bad_input_is_dead_lettered_and_the_worker_keeps_going(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    service = await start_service(max_body_bytes=2048)
    good = json.loads(encode(consent_changed("debtor-ok")))
    missing = {**good, "payload": {k: v for k, v in good["payload"].items() if k != "status"}}
    bad_tenant = {**good, "tenant_id": "Not A Tenant"}
    unknown = {**good, "type": "consent.revoked"}
    oversized = {**good, "payload": {**good["payload"], "evidence": {"reference": "x" * 4000}}}
    bodies = {
        "undecodable": b'{"type": "consent.changed", ',
        "unknown_type": json.dumps(unknown).encode(),
        "invalid": json.dumps(missing).encode(),
        "invalid-tenant": json.dumps(bad_tenant).encode(),
        "oversized": json.dumps(oversized).encode(),
    }
    for body in bodies.values():
        await publisher.publish_raw(body, "consent.changed")
    await publisher.publish(consent_changed("debtor-after"))

    dead = await dead_letters(settings, service, "consent", 5)
    reasons = sorted((m.headers[H_ERROR_TYPE], m.headers[H_ERROR]) for m in dead)
    assert reasons == [
        ("invalid", "payload.status: Field required"),
        ("invalid", "tenant_id: String should match pattern '^[a-z0-9][a-z0-9-]{1,62}$'"),
        ("oversized", f"body of {len(bodies['oversized'])} bytes exceeds the limit of 2048"),
        ("undecodable", "body is not a JSON object"),
        ("unknown_type", f"no contract for this type; known: {sorted(MESSAGE_TYPES)}"),
    ]
    for message in dead:
        assert message.headers[H_ATTEMPTS] == 1
        assert message.headers[H_WORKER] == "consent"
        assert message.headers[H_ROUTING_KEY] == "consent.changed"
        assert message.body in bodies.values()

    async def applied() -> bool:
        return count(settings.db_path, "SELECT count(*) FROM consent_state") == 1

    await wait_until(applied)
    assert service.ready
    logged = [line["event"] for line in log_lines(log_output)]
    assert logged.count("dead_lettered") == 5


async def test_retryable_error_twice_then_success(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    worker = FlakyWorker(failures=2)
    service = await start_service([worker])
    message = consent_changed("debtor-retry")
    await publisher.publish(message)

    async def applied() -> bool:
        return count(settings.db_path, "SELECT count(*) FROM audit_log") == 1

    await wait_until(applied)
    assert worker.calls[str(message.message_id)] == 3
    with connect(settings.db_path) as conn:
        assert conn.execute("SELECT action, attempt FROM audit_log").fetchall() == [
            ("flaky_applied", 3)
        ]
    lines = log_lines(log_output)
    scheduled = [line for line in lines if line["event"] == "retry_scheduled"]
    assert [(line["attempt"], line["next_delay_ms"]) for line in scheduled] == [(1, 50), (2, 100)]
    assert [line["attempt"] for line in lines if line["event"] == "flaky_applied"] == [3]
    assert await queue_depth(settings.amqp_url.get_secret_value(), service.names.dlq("flaky")) == 0
    assert_no_personal_data(log_output.getvalue())


async def test_always_failing_is_dead_lettered_after_the_last_tier(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    worker = FlakyWorker(failures=1_000)
    service = await start_service([worker])
    message = consent_changed("debtor-doomed", reference=f"call from {PHONE}", wording=EMAIL)
    await publisher.publish(message)

    [dead] = await dead_letters(settings, service, "flaky", 1)
    headers = dead.headers
    assert worker.calls[str(message.message_id)] == 4  # 1 + 3 retry tiers
    assert headers[H_ATTEMPTS] == 4
    assert headers[H_ERROR_TYPE] == "provider_unavailable"
    assert headers[H_ERROR] == "provider down while mailing [redacted] at [redacted]"
    assert headers[H_WORKER] == "flaky"
    assert headers[H_ROUTING_KEY] == "consent.changed"
    assert str(headers[H_FIRST_FAILURE]) < str(headers[H_LAST_FAILURE])
    assert dead.message_id == message.message_id.hex or dead.body == encode(message)
    assert "x-death" not in headers
    assert_no_personal_data(headers_text([dead]), log_output.getvalue())
    assert count(settings.db_path, "SELECT count(*) FROM audit_log") == 0


async def test_unexpected_exception_is_dead_lettered_at_once(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    worker = FlakyWorker(failures=0, crash=True)
    service = await start_service([worker])
    await publisher.publish(consent_changed("debtor-bug"))
    [dead] = await dead_letters(settings, service, "flaky", 1)
    assert dead.headers[H_ERROR_TYPE] == "handler_crashed"
    assert dead.headers[H_ATTEMPTS] == 1
    assert str(dead.headers[H_ERROR]).startswith("KeyError: ")
    assert_no_personal_data(headers_text([dead]), log_output.getvalue())
    crashed = [line for line in log_lines(log_output) if line["event"] == "handler_crashed"]
    assert crashed[0]["error_type"] == "KeyError"


async def test_planted_personal_data_never_reaches_logs_or_headers(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings, log_output: Any
) -> None:
    service = await start_service()
    good = consent_changed(
        "debtor-pii",
        reference=f"sms from {PHONE}",
        wording=f"I, ID {SA_ID}, agree",
        captured_by=EMAIL,
    )
    await publisher.publish(good)
    body = json.loads(encode(consent_changed("debtor-pii-2")))
    body["payload"]["subject_ref"] = EMAIL
    body["payload"]["channel"] = PHONE
    body[SA_ID] = EMAIL
    await publisher.publish_raw(json.dumps(body).encode(), "consent.changed")
    [dead] = await dead_letters(settings, service, "consent", 1)

    async def applied() -> bool:
        return count(settings.db_path, "SELECT count(*) FROM consent_history") == 1

    await wait_until(applied)
    assert dead.headers[H_ERROR_TYPE] == "invalid"
    assert_no_personal_data(headers_text([dead]), log_output.getvalue())
    # the evidence itself is kept in the store, where it belongs
    with connect(settings.db_path) as conn:
        [(evidence,)] = conn.execute("SELECT evidence FROM consent_history").fetchall()
    assert SA_ID in evidence


@pytest.mark.parametrize("key", [None, "not-the-key-" + "x" * 32])
async def test_forged_or_missing_signature_is_dead_lettered(
    start_service: ServiceFactory, settings: Settings, key: str | None, tmp_path: Path
) -> None:
    keyring = write_keyring(tmp_path, {"key_id": "real"})
    service = await start_service(signing_keys_file=keyring)
    url = settings.amqp_url.get_secret_value()
    ns = settings.namespace
    async with Publisher(url, namespace=ns, signing_key=key, key_id="real") as forger:
        await forger.publish(consent_changed("debtor-forged"))
    async with Publisher(url, namespace=ns, signing_key=TEST_SECRET, key_id="real") as real:
        await real.publish(consent_changed("debtor-signed"))

    [dead] = await dead_letters(settings, service, "consent", 1)
    assert dead.headers[H_ERROR_TYPE] == "signature_invalid"
    expected = "signature header missing" if key is None else "signature does not match the message"
    assert dead.headers[H_ERROR] == expected

    async def applied() -> bool:
        return count(settings.db_path, "SELECT count(*) FROM consent_state") == 1

    await wait_until(applied)
    with connect(settings.db_path) as conn:
        assert conn.execute("SELECT subject_ref FROM consent_state").fetchall() == [
            ("debtor-signed",)
        ]


async def test_unknown_tenant_is_refused_when_tenants_are_listed(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service(tenants=["acme"])
    await publisher.publish(consent_changed("debtor-x", tenant_id="bravo"))
    [dead] = await dead_letters(settings, service, "consent", 1)
    assert (dead.headers[H_ERROR_TYPE], dead.headers[H_ERROR]) == (
        "invalid",
        "tenant_id: not a known tenant",
    )


async def test_a_batch_with_one_bad_message_applies_the_others(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    """A store error in one message's writes must not block the rest of its batch."""

    class PoisonWorker(ConsentWorker):
        async def changed(self, message: ConsentChanged, effects: Effects) -> None:
            await super().changed(message, effects)
            if message.payload.subject_ref == "debtor-poison":
                effects.write("INSERT INTO inbox (worker) VALUES (NULL)", ())

    service = await start_service([PoisonWorker()], batch_window_ms=200)
    for i in range(20):
        await publisher.publish(consent_changed(f"debtor-{i}"))
    await publisher.publish(consent_changed("debtor-poison"))
    [dead] = await dead_letters(settings, service, "consent", 1)
    assert dead.headers[H_ERROR_TYPE] == "store_rejected"

    async def applied() -> bool:
        return count(settings.db_path, "SELECT count(*) FROM consent_state") == 20

    await wait_until(applied)
