"""``privacyops consent check|may-ask``: what senders ask before they market or ask."""

from __future__ import annotations

import asyncio

from config.settings import Settings
from infra.publisher import Publisher
from tests.support.helpers import ServiceFactory, consent_changed, run_cli, wait_until


async def test_senders_can_tell_withdrawn_from_never_ask_and_check_by_purpose(
    start_service: ServiceFactory, publisher: Publisher, settings: Settings
) -> None:
    service = await start_service()
    await publisher.publish(consent_changed("d-granted", purpose="partner_offers"))
    await publisher.publish(consent_changed("d-refused", status="refused", source="call_centre"))
    await publisher.publish(consent_changed("d-withdrawn", status="withdrawn"))

    async def applied() -> bool:
        async with service.store.transaction() as tx:
            row = await tx.fetchone("SELECT count(*) FROM inbox WHERE worker = 'consent'")
        return row is not None and row[0] == 3

    await wait_until(applied)
    check = run_cli(
        settings, "consent", "check", "acme", "d-granted", "email", "--purpose", "partner_offers"
    )
    assert (check.returncode, check.stdout.strip()) == (0, "contactable")
    other = await asyncio.to_thread(
        run_cli, settings, "consent", "check", "acme", "d-granted", "email"
    )
    assert (other.returncode, other.stdout.strip()) == (1, "suppressed")  # direct_marketing
    never = await asyncio.to_thread(run_cli, settings, "consent", "may-ask", "acme", "d-refused")
    assert (never.returncode, never.stdout.strip()) == (1, "never ask")
    may = await asyncio.to_thread(run_cli, settings, "consent", "may-ask", "acme", "d-withdrawn")
    assert (may.returncode, may.stdout.strip()) == (0, "may ask")
