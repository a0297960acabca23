"""Issue 14: providers fail, then come back; each notice is still sent exactly once.

* SMTP down (nothing listening) while notices wait, then up: each mail arrives once.
* The SMS gateway answers 500 for a while, then 200: each SMS is accepted once (the
  gateway counts the requests it accepted per Idempotency-Key, not just its dedupe).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from config.settings import Settings
from tests.support.helpers import ServiceFactory, free_port, wait_until
from tests.support.notify_servers import (
    Gateway,
    Mailbox,
    delivery,
    seed,
    start_gateway,
    start_smtp,
    stop_server,
)
from tests.workers.notifier.support import (
    EMAIL,
    PACKAGE,
    REFUSED,
    run_notifier,
    smtp_settings,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120), pytest.mark.stores("sqlite")]

NOTICES = 8
RETRIES = [300, 600, 1_200, 2_400, 4_800]


async def all_have(settings: Settings, ids: list[str], statuses: set[str]) -> None:
    async def reached() -> bool:
        return all((delivery(settings, i) or {}).get("outbox_status") in statuses for i in ids)

    await wait_until(reached, within=60, interval=0.1)


async def test_smtp_down_then_back_each_mail_once(
    start_service: ServiceFactory, settings: Settings
) -> None:
    port = free_port()
    ids = [
        await seed(
            settings, "acme", f"debtor-m{i}", "dsr_refused", "email", REFUSED, {"email": EMAIL}
        )
        for i in range(NOTICES)
    ]
    await run_notifier(
        start_service, settings, **smtp_settings(settings, port, retry_delays_ms=RETRIES)
    )
    await all_have(settings, ids, {"retrying"})  # every one tried while SMTP was down
    mailbox = Mailbox()
    server, _ = await start_smtp(mailbox, port)
    try:
        await all_have(settings, ids, {"sent"})
    finally:
        await stop_server(server)
    sent = Counter(message["Message-ID"] for _, message in mailbox.received)
    assert sent == Counter({f"<{i}@acme-collections.example>": 1 for i in ids})


class CountingGateway(Gateway):
    """Counts the requests it accepted (status 200) per Idempotency-Key."""

    accepted: Counter[str]

    async def handle(self, request: web.Request) -> web.Response:
        response = await super().handle(request)
        if response.status == 200:
            self.accepted[request.headers.get("Idempotency-Key", "")] += 1
        return response


async def test_sms_gateway_500_then_200_each_sms_once(
    start_service: ServiceFactory, settings: Settings
) -> None:
    gateway = CountingGateway(token="gw-secret", status=500)
    gateway.accepted = Counter()
    runner, url = await start_gateway(gateway)
    try:
        ids = [
            await seed(
                settings,
                "acme",
                f"debtor-s{i}",
                "dsr_package_ready",
                "sms",
                PACKAGE,
                {"phone": "082 555 0199"},
            )
            for i in range(NOTICES)
        ]
        changes: dict[str, Any] = {
            "notify_sms_transport": "http",
            "sms_gateway_url": url,
            "sms_gateway_token": "gw-secret",
            "outbox_poll_s": 0.05,
            "retry_delays_ms": RETRIES,
        }
        await run_notifier(start_service, settings, **changes)
        await all_have(settings, ids, {"retrying"})
        gateway.status = 200
        await all_have(settings, ids, {"sent"})
    finally:
        await runner.cleanup()
    assert gateway.accepted == Counter(dict.fromkeys(ids, 1))
    assert len(gateway.requests) > NOTICES  # the 500s were real attempts
