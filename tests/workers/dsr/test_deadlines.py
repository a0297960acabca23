"""Deadlines end to end (docs/rules.md "Deadlines"): real broker and store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from config.settings import Settings
from config.tenants import DEFAULT_PATH as DEFAULT_TENANTS
from infra.headers import H_ERROR, H_ERROR_TYPE
from infra.publisher import Publisher
from infra.runtime.service import Service
from messages.dsr import DsrExtended, DsrExtendedPayload
from tests.support.dsr import answered, request, sql, start_dsr
from tests.support.helpers import ServiceFactory, drain_queue, queue_depth, wait_until


def extension(request_id: str, months: int, occurred_at: datetime | None = None) -> DsrExtended:
    return DsrExtended(
        tenant_id="acme",
        occurred_at=occurred_at or datetime.now(UTC),
        payload=DsrExtendedPayload(
            request_id=request_id, months=months, reason="records are held in an off-site archive"
        ),
    )


async def dead_letter(service: Service, settings: Settings) -> tuple[str, str]:
    url = settings.amqp_url.get_secret_value()

    async def arrived() -> bool:
        return await queue_depth(url, service.names.dlq("dsr")) >= 1

    await wait_until(arrived)
    [letter] = await drain_queue(url, service.names.dlq("dsr"))
    return str(letter.headers[H_ERROR_TYPE]), str(letter.headers[H_ERROR])


def due(settings: Settings, request_id: str) -> str:
    return str(
        sql(settings.db_path, "SELECT due_on FROM dsr_requests WHERE request_id = ?", request_id)[
            0
        ][0]
    )


async def test_a_request_received_at_half_past_midnight_sast_counts_from_that_date(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    half_past_midnight_sast = datetime(2026, 2, 28, 22, 30, tzinfo=UTC)  # 1 March in SA
    await publisher.publish(
        request("r-march", "erasure", verified=False, received_at=half_past_midnight_sast)
    )
    assert await answered(settings.db_path, "r-march") == "awaiting_verification"
    assert due(settings, "r-march") == "2026-04-01"  # not 28 March (the UTC date + 1 month)


async def test_a_back_dated_extension_after_the_due_date_is_refused(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    received = datetime.now(UTC) - timedelta(days=40)
    await publisher.publish(
        request("r-past", "access", verified=False, received_at=received, regime="gdpr")
    )
    assert await answered(settings.db_path, "r-past") == "awaiting_verification"
    # the sender dates it inside the deadline; the worker receives it after the deadline
    await publisher.publish(extension("r-past", 1, occurred_at=received + timedelta(days=5)))
    assert await dead_letter(dsr, settings) == (
        "rule_violated",
        "an extension must be decided before the due date",
    )
    assert sql(settings.db_path, "SELECT extended FROM dsr_requests") == [(0,)]


async def test_popia_access_is_due_in_30_days_and_popias_other_rights_get_no_extension(
    dsr: Service, publisher: Publisher, settings: Settings
) -> None:
    received = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    await publisher.publish(request("r-paia", "access", verified=False, received_at=received))
    await publisher.publish(request("r-popia", "erasure", verified=False))
    assert await answered(settings.db_path, "r-paia") == "awaiting_verification"
    assert await answered(settings.db_path, "r-popia") == "awaiting_verification"
    assert due(settings, "r-paia") == "2026-10-31"  # PAIA s56: 30 days, before 1 November

    before = due(settings, "r-popia")
    await publisher.publish(extension("r-popia", 2))
    assert await dead_letter(dsr, settings) == (
        "rule_violated",
        "POPIA allows no extension for this right; only access (PAIA s57)",
    )
    assert due(settings, "r-popia") == before


async def test_a_tenant_configured_in_another_zone_counts_its_dates_there(
    settings: Settings, start_service: ServiceFactory, publisher: Publisher, tmp_path: Path
) -> None:
    """The zone is per tenant (``timezone`` in its profile); the default stays SAST."""
    tenants = tmp_path / "tenants.toml"
    profiles = DEFAULT_TENANTS.read_text()
    assert "[tenants.bravo]\n" in profiles
    tenants.write_text(
        profiles.replace("[tenants.bravo]\n", '[tenants.bravo]\ntimezone = "Europe/London"\n')
    )
    await start_dsr(settings.with_changes(tenants_path=tenants), start_service, tmp_path)
    moment = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)  # 1 March in SA, 28 February in London
    await publisher.publish(request("r-sast", "erasure", verified=False, received_at=moment))
    await publisher.publish(
        request("r-london", "erasure", verified=False, received_at=moment, tenant="bravo")
    )
    assert await answered(settings.db_path, "r-sast") == "awaiting_verification"
    assert await answered(settings.db_path, "r-london") == "awaiting_verification"
    assert due(settings, "r-sast") == "2026-04-01"
    assert due(settings, "r-london") == "2026-03-28"
