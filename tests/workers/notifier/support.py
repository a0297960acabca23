"""The notifier tests' helpers: the planted contact details and notice contexts they share,
and a notifier started against a test SMTP server."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from infra.runtime.service import Service
from tests.support.helpers import ServiceFactory
from workers.notifier import NotifierWorker

EMAIL, PHONE, SA_ID = "thandi.nkosi@example.co.za", "+27 82 555 0199", "8501015800084"
REFUSED = {"request_id": "DSR-1", "request_kind": "erasure", "reasons": [f"ID {SA_ID} on file"]}
#: A notice that may go by SMS (a final answer or a breach notice may not: they go in writing).
PACKAGE = {
    "request_id": "DSR-1",
    "package_token": f"code-{SA_ID}",
    "expires_at": "2026-02-22T10:00:00+00:00",
}


def smtp_settings(settings: Settings, port: int, **more: Any) -> dict[str, Any]:
    return {
        "notify_email_transport": "smtp",
        "smtp_port": port,
        "smtp_security": "none",
        "outbox_poll_s": 0.05,
        **more,
    }


async def run_notifier(start: ServiceFactory, settings: Settings, **changes: Any) -> Service:
    worker = NotifierWorker(settings.with_changes(**changes))
    return await start([worker], **changes)
