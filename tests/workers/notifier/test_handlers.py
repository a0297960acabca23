"""The notifier against a real broker, a real SMTP server and a real HTTP SMS gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
import warnings
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from config.settings import Settings
from infra.headers import H_ERROR, H_ERROR_TYPE
from messages.names import Names
from messages.notices import NoticeSend, NoticeSendPayload
from messages.registry import encode
from tests.support.db import connect
from tests.support.helpers import (
    BIN,
    ServiceFactory,
    delete_namespace,
    drain_queue,
    log_lines,
    queue_depth,
    security_env,
    store_env,
    wait_until,
)
from tests.support.notify_servers import (
    Gateway,
    Mailbox,
    authenticator,
    delivery,
    free_port,
    seed,
    self_signed,
    start_gateway,
    start_smtp,
    stop_server,
)
from tests.workers.notifier.support import (
    EMAIL,
    PACKAGE,
    PHONE,
    REFUSED,
    SA_ID,
    run_notifier,
    smtp_settings,
)
from workers.notifier import NotifierWorker

PLANTED = (EMAIL, PHONE, SA_ID, "82 555 0199", "555 0199", "+27825550199")
CONSENT = {"channel": "email", "status": "granted", "effective_at": "2026-01-15T10:00:00+00:00"}

BREACH = {
    "incident_ref": "INC-9",
    "consequences": "Phishing",
    "measures": "Locked the account",
    "subject_actions": "Change your password",
}


def spawn(env: dict[str, str], out: Any) -> subprocess.Popen[bytes]:
    """``privacyops run`` in a child process (so a test can kill it)."""
    return subprocess.Popen([str(BIN), "run", "--migrate"], env=env, stdout=out, stderr=out)


async def status_is(settings: Settings, notice_id: str, status: str, within: float = 20) -> None:
    async def reached() -> bool:
        row = delivery(settings, notice_id)
        return row is not None and row["outbox_status"] == status

    await wait_until(reached, within=within)


async def dead_letters(settings: Settings, n: int) -> list[AbstractIncomingMessage]:
    url = settings.amqp_url.get_secret_value()
    name = f"{settings.namespace}.notifier.dlq"

    async def arrived() -> bool:
        return await queue_depth(url, name) >= n

    await wait_until(arrived)
    return await drain_queue(url, name)


def assert_no_personal_data(*texts: str) -> None:
    for text in texts:
        for planted in PLANTED:
            assert planted not in text, planted


async def test_email_goes_out_once_with_tenant_identity(
    start_service: ServiceFactory, settings: Settings
) -> None:
    mailbox = Mailbox()
    server, port = await start_smtp(mailbox)
    try:
        notice_id = await seed(
            settings, "acme", "debtor-1", "consent_confirmation", "email", CONSENT, {"email": EMAIL}
        )
        await run_notifier(start_service, settings, **smtp_settings(settings, port))
        await status_is(settings, notice_id, "sent")
    finally:
        await stop_server(server)
    [(recipients, message)] = mailbox.received
    assert recipients == [EMAIL]
    assert message["Message-ID"] == f"<{notice_id}@acme-collections.example>"
    assert "Acme Collections (Pty) Ltd" in message["From"]
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.walk()]
    assert parts[1:] == ["text/plain", "text/html"]
    row = delivery(settings, notice_id)
    assert row is not None
    assert (row["status"], row["channel"], row["transport"], row["attempts"]) == (
        "sent",
        "email",
        "smtp",
        1,
    )


async def test_sms_through_the_gateway_with_idempotency_key(
    start_service: ServiceFactory, settings: Settings
) -> None:
    gateway = Gateway(token="gw-secret")
    runner, url = await start_gateway(gateway)
    try:
        notice_id = await seed(
            settings,
            "acme",
            "debtor-2",
            "dsr_package_ready",
            "sms",
            PACKAGE,
            {"phone": "082 555 0199"},
        )
        await run_notifier(
            start_service,
            settings,
            notify_sms_transport="http",
            sms_gateway_url=url,
            sms_gateway_token="gw-secret",
            outbox_poll_s=0.05,
        )
        await status_is(settings, notice_id, "sent")
    finally:
        await runner.cleanup()
    [request] = gateway.requests
    assert request["headers"]["Idempotency-Key"] == notice_id
    assert request["body"]["from"] == "ACME"
    assert request["body"]["to"] == "+27825550199"
    assert f"code-{SA_ID}" in request["body"]["text"]
    assert delivery(settings, notice_id)["provider_ref"] == f"gw-{notice_id}"  # type: ignore[index]


async def test_a_notice_delivered_twice_is_sent_once(
    start_service: ServiceFactory, settings: Settings, publisher: Any
) -> None:
    mailbox = Mailbox()
    server, port = await start_smtp(mailbox)
    try:
        notice_id = await seed(
            settings, "acme", "debtor-3", "consent_confirmation", None, CONSENT, {"email": EMAIL}
        )
        service = await run_notifier(start_service, settings, **smtp_settings(settings, port))
        await status_is(settings, notice_id, "sent")
        again = NoticeSend(
            message_id=notice_id,
            tenant_id="acme",
            payload=NoticeSendPayload(
                notice_id=notice_id,
                subject_ref="debtor-3",
                kind="consent_confirmation",  # type: ignore[arg-type]
            ),
        )
        other_copy = again.model_copy(update={"message_id": uuid.uuid4()})
        for message in (again, other_copy):  # same message_id (inbox); new id (sent state)
            await publisher._publisher.publish(  # the relay's route: internal, key notifier
                service.names.internal, "notice.send", encode(message), message_id=notice_id
            )

        async def both_absorbed() -> bool:
            with connect(settings.db_path) as conn:
                inbox = conn.execute("SELECT count(*) FROM inbox WHERE worker = 'notifier'")
                skipped = conn.execute(
                    "SELECT count(*) FROM audit_log WHERE action = 'notice_already_sent'"
                )
                return (inbox.fetchone()[0], skipped.fetchone()[0]) == (2, 1)

        await wait_until(both_absorbed)
    finally:
        await stop_server(server)
    assert len(mailbox.received) == 1


async def test_smtp_down_then_back_arrives_once_after_retries(
    start_service: ServiceFactory, settings: Settings
) -> None:
    port = free_port()
    mailbox = Mailbox()
    notice_id = await seed(
        settings, "acme", "debtor-4", "dsr_refused", "email", REFUSED, {"email": EMAIL}
    )
    await run_notifier(
        start_service,
        settings,
        **smtp_settings(settings, port, retry_delays_ms=[300, 600, 1200, 2400, 4800]),
    )
    await status_is(settings, notice_id, "retrying")
    server, _ = await start_smtp(mailbox, port)
    try:
        await status_is(settings, notice_id, "sent")
    finally:
        await stop_server(server)
    assert len(mailbox.received) == 1
    row = delivery(settings, notice_id)
    assert row is not None
    assert row["attempts"] >= 2


async def test_permanent_rejection_and_no_contact_are_dead_lettered_without_personal_data(
    start_service: ServiceFactory, settings: Settings, log_output: Any
) -> None:
    mailbox = Mailbox(refuse={EMAIL})
    server, port = await start_smtp(mailbox)
    gateway = Gateway(token="t", status=422)
    runner, url = await start_gateway(gateway)
    try:
        refused = await seed(
            settings, "acme", "debtor-5", "dsr_refused", "email", REFUSED, {"email": EMAIL}
        )
        invalid_number = await seed(
            settings, "acme", "debtor-6", "dsr_package_ready", "sms", PACKAGE, {"phone": PHONE}
        )
        no_contact = await seed(settings, "acme", "debtor-7", "dsr_package_ready", "sms", PACKAGE)
        await run_notifier(
            start_service,
            settings,
            **smtp_settings(
                settings,
                port,
                notify_sms_transport="http",
                sms_gateway_url=url,
                sms_gateway_token="t",
            ),
        )
        dead = await dead_letters(settings, 3)
    finally:
        await stop_server(server)
        await runner.cleanup()
    reasons = sorted((m.headers[H_ERROR_TYPE], m.headers[H_ERROR]) for m in dead)
    assert reasons == [
        ("no_contact", "no sms contact point for the subject"),
        ("provider_rejected", "recipient refused: smtp 550"),
        ("provider_rejected", "sms gateway refused the message: http 422"),
    ]
    for notice_id, reason in (
        (refused, "provider_rejected"),
        (invalid_number, "provider_rejected"),
        (no_contact, "no_contact"),
    ):
        row = delivery(settings, notice_id)
        assert row is not None
        assert (row["outbox_status"], row["status"], row["reason"]) == ("failed", "failed", reason)
    assert mailbox.received == []
    assert SA_ID in json.dumps(gateway.requests)  # the body carries it by design
    headers = json.dumps([m.headers for m in dead], default=str)
    assert_no_personal_data(headers, log_output.getvalue())
    events = [line["event"] for line in log_lines(log_output)]
    assert events.count("dead_lettered") == 3
    assert events.count("notice_failed") == 3


async def test_starttls_and_auth_from_settings(
    start_service: ServiceFactory, settings: Settings, tmp_path: Path
) -> None:
    tls, ca_file = self_signed(tmp_path)
    mailbox = Mailbox()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server, port = await start_smtp(
            mailbox,
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            authenticator=authenticator("mailer", "s3cret"),
        )
    try:
        notice_id = await seed(
            settings, "acme", "debtor-8", "consent_confirmation", "email", CONSENT, {"email": EMAIL}
        )
        await run_notifier(
            start_service,
            settings,
            **smtp_settings(
                settings,
                port,
                smtp_host="localhost",
                smtp_security="starttls",
                smtp_username="mailer",
                smtp_password="s3cret",
                smtp_ca_file=ca_file,
            ),
        )
        await status_is(settings, notice_id, "sent")
    finally:
        await stop_server(server)
    assert len(mailbox.received) == 1


async def test_file_channel_is_the_default(
    start_service: ServiceFactory, settings: Settings, tmp_path: Path
) -> None:
    email_id = await seed(
        settings, "acme", "debtor-9", "consent_confirmation", "email", CONSENT, {"email": EMAIL}
    )
    sms_id = await seed(
        settings, "acme", "debtor-9", "dsr_package_ready", "sms", PACKAGE, {"phone": PHONE}
    )
    await run_notifier(start_service, settings, notify_dir=tmp_path / "out", outbox_poll_s=0.05)
    await status_is(settings, email_id, "sent")
    await status_is(settings, sms_id, "sent")
    eml = (tmp_path / "out" / "email" / f"{email_id}.eml").read_text()
    assert f"Message-ID: <{email_id}@acme-collections.example>" in eml
    sms = (tmp_path / "out" / "sms" / f"{sms_id}.txt").read_text()
    assert "To: +27825550199" in sms


async def test_notices_list_cli(start_service: ServiceFactory, settings: Settings) -> None:
    notice_id = await seed(settings, "acme", "debtor-10", "dsr_package_ready", "sms", PACKAGE)
    await run_notifier(start_service, settings, outbox_poll_s=0.05)
    await status_is(settings, notice_id, "failed")
    env = {**os.environ, **store_env(settings), **security_env(settings)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), "notices", "list", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    failed = await asyncio.to_thread(cli, "--failed", "--json")
    assert failed.returncode == 1
    [row] = json.loads(failed.stdout)
    assert (row["notice_id"], row["status"], row["reason"]) == (notice_id, "failed", "no_contact")
    every = await asyncio.to_thread(cli)
    assert every.returncode == 0
    assert "no_contact" in every.stdout


async def test_crash_between_send_and_ack_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    """Kill the worker while the SMTP server holds the message: the restart sends it again,
    with the same Message-ID (the documented window), and nothing is lost."""
    workers: list[subprocess.Popen[bytes]] = []
    mailbox = Mailbox(on_data=lambda: workers[-1].send_signal(signal.SIGKILL))
    server, port = await start_smtp(mailbox)
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        **store_env(settings),
        "PRIVACYOPS_WORKERS": '["notifier"]',
        **security_env(settings),
        "PRIVACYOPS_NOTIFY_EMAIL_TRANSPORT": "smtp",
        "PRIVACYOPS_SMTP_PORT": str(port),
        "PRIVACYOPS_SMTP_SECURITY": "none",
        "PRIVACYOPS_NOTICE_POLL_S": "0.05",
        "PRIVACYOPS_HANDLER_TIMEOUT_S": "1",
        "PRIVACYOPS_RETRY_DELAYS_MS": "[500, 1000, 2000, 4000]",
        "PRIVACYOPS_LOG_FORMAT": "json",
    }
    logs = tmp_path / "worker.log"
    try:
        notice_id = await seed(
            settings, "acme", "debtor-11", "breach_notice", "email", BREACH, {"email": EMAIL}
        )
        with logs.open("wb") as out:
            workers.append(spawn(env, out))

            async def killed() -> bool:
                return workers[0].poll() is not None

            await wait_until(killed)
            assert workers[0].returncode == -signal.SIGKILL
            mailbox.on_data = None
            workers.append(spawn(env, out))
            await status_is(settings, notice_id, "sent", within=30)
            workers[1].send_signal(signal.SIGTERM)
            await asyncio.to_thread(workers[1].wait, 15)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(5)
        await stop_server(server)
        await delete_namespace(
            settings.amqp_url.get_secret_value(),
            Names(settings.namespace),
            ["notifier"],
            [500, 1000, 2000, 4000],
        )
    ids = [message["Message-ID"] for _, message in mailbox.received]
    assert ids == [f"<{notice_id}@acme-collections.example>"] * 2
    assert_no_personal_data(logs.read_text())


async def test_consent_change_reaches_the_subject_through_the_outbox(
    start_service: ServiceFactory, settings: Settings, publisher: Any, tmp_path: Path
) -> None:
    """The whole path: consent worker -> notification_outbox -> relay -> notifier -> file."""
    from tests.support.helpers import consent_changed
    from workers.consent import ConsentWorker

    await seed(settings, "acme", "debtor-12", "consent_confirmation", "email", CONSENT)
    with connect(settings.db_path) as conn:
        conn.execute("DELETE FROM notification_outbox")
        conn.execute(
            "INSERT INTO contact_points (tenant_id, subject_ref, kind, value)"
            " VALUES ('acme', 'debtor-12', 'email', ?)",
            (EMAIL,),
        )
    changes = {"notify_dir": tmp_path / "out", "outbox_poll_s": 0.05}
    await start_service(
        [ConsentWorker(), NotifierWorker(settings.with_changes(**changes))], **changes
    )
    await publisher.publish(consent_changed("debtor-12", status="withdrawn"))

    async def sent() -> bool:
        with connect(settings.db_path) as conn:
            rows = conn.execute("SELECT status FROM notification_outbox").fetchall()
        return rows == [("sent",)]

    await wait_until(sent)
    [eml] = (tmp_path / "out" / "email").glob("*.eml")
    text = eml.read_text()
    assert "You withdrew your consent" in text
    assert "To stop marketing messages from Acme Collections (Pty) Ltd" in text


POSTAL = "12 Long Street, Cape Town, 8001"
S22_5_HEADINGS = (
    "possible consequences",
    "measures taken",
    "What you should do",
    "identity of the unauthorised person",
)


async def test_a_breach_notice_goes_in_full_by_e_mail_or_post_never_cut_to_an_sms(
    start_service: ServiceFactory, settings: Settings, tmp_path: Path
) -> None:
    by_post = await seed(
        settings,
        "acme",
        "debtor-p",
        "breach_notice",
        None,
        BREACH,
        {"phone": PHONE, "postal": POSTAL},
    )
    phone_only = await seed(
        settings, "acme", "debtor-s", "breach_notice", "sms", BREACH, {"phone": PHONE}
    )
    out = tmp_path / "out"
    await run_notifier(start_service, settings, notify_dir=out, outbox_poll_s=0.05)
    await status_is(settings, by_post, "sent")
    await status_is(settings, phone_only, "failed")
    letter = (out / "post" / f"{by_post}.txt").read_text()
    assert POSTAL in letter
    for heading in S22_5_HEADINGS:
        assert heading in letter
    assert "Locked the account" in letter
    assert not (out / "sms").exists()  # neither notice was cut down to an SMS
    row = delivery(settings, phone_only)
    assert row is not None
    assert row["reason"] == "no_contact"
    assert delivery(settings, by_post)["channel"] == "post"  # type: ignore[index]


async def test_a_reply_by_post_is_a_letter(
    start_service: ServiceFactory, settings: Settings, tmp_path: Path
) -> None:
    received = {"request_id": "DSR-8", "request_kind": "access", "due_at": "2026-02-15"}
    notice_id = await seed(
        settings, "acme", "debtor-8", "dsr_received", "post", received, {"postal": POSTAL}
    )
    out = tmp_path / "out"
    await run_notifier(start_service, settings, notify_dir=out, outbox_poll_s=0.05)
    await status_is(settings, notice_id, "sent")
    letter = (out / "post" / f"{notice_id}.txt").read_text()
    assert POSTAL in letter
    assert "DSR-8" in letter
    assert "Acme Collections (Pty) Ltd" in letter


async def test_a_request_that_asks_for_replies_by_post_is_answered_by_letter(
    start_service: ServiceFactory, settings: Settings, publisher: Any, tmp_path: Path
) -> None:
    """dsr.requested with reply_to post: the relay no longer marks the notices invalid."""
    from tests.support.dsr import request
    from workers.dsr import DsrWorker

    await seed(settings, "acme", "debtor-13", "dsr_received", "post", {}, {"postal": POSTAL})
    with connect(settings.db_path) as conn:
        conn.execute("DELETE FROM notification_outbox")
    changes = {"notify_dir": tmp_path / "out", "outbox_poll_s": 0.05}
    chosen = settings.with_changes(**changes)
    await start_service([DsrWorker(chosen), NotifierWorker(chosen)], **changes)
    await publisher.publish(
        request(
            "r-post", "objection", "debtor-13", reply_to="post", details={"purposes": ["profiling"]}
        )
    )

    async def sent() -> bool:
        with connect(settings.db_path) as conn:
            rows = conn.execute("SELECT kind, status FROM notification_outbox").fetchall()
        return sorted(rows) == [("dsr_completed", "sent"), ("dsr_received", "sent")]

    await wait_until(sent)
    letters = [p.read_text() for p in (tmp_path / "out" / "post").glob("*.txt")]
    assert len(letters) == 2
    assert all(POSTAL in letter for letter in letters)
