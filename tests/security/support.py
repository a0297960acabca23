"""Helpers of the attack suite: the keys it signs with, the encrypted store it reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from config.settings import Settings
from infra.keys import Keys, store_key
from infra.store.sqlite import connect_file
from messages.dsr import DsrRequested, DsrRequestedPayload, DsrVerified, DsrVerifiedPayload
from tests.support import db
from tests.support.helpers import drain_queue, queue_depth, wait_until

EMAIL, NEW_EMAIL = "thandi.nkosi@example.co.za", "attacker@evil.example"
PHONE, SA_ID = "+27825550199", "8001015009087"


def secret_of(key_id: str) -> str:
    return f"{key_id}-secret-" + "s" * 32


#: portal: acme's web portal, may not assert a verified identity (portal-2: its next key,
#: valid at the same time during a rotation); verifier: acme's
#: identity service, may; bravo: another tenant's key; retired: past its not_after.
KEYS: tuple[dict[str, Any], ...] = (
    {
        "key_id": "portal",
        "secret": secret_of("portal"),
        "tenants": ["acme"],
        "types": ["consent.changed", "dsr.*"],
    },
    {
        "key_id": "portal-2",
        "secret": secret_of("portal-2"),
        "tenants": ["acme"],
        "types": ["consent.changed", "dsr.*"],
    },
    {
        "key_id": "verifier",
        "secret": secret_of("verifier"),
        "tenants": ["acme"],
        "types": ["dsr.*"],
        "may_assert_verification": True,
    },
    {"key_id": "bravo", "secret": secret_of("bravo"), "tenants": ["bravo"]},
    {
        "key_id": "retired",
        "secret": secret_of("retired"),
        "not_after": "2020-01-01T00:00:00Z",
    },
)


@contextlib.contextmanager
def store(settings: Settings) -> Iterator[Any]:
    """A DB-API connection to the test's store (SQLCipher with its key when encrypted)."""
    if settings.store_url is not None:  # PostgreSQL: the test's own schema
        with db.connect(settings.db_path) as pg:
            yield pg
        return
    conn = connect_file(settings.db_path, store_key(settings))
    try:
        yield conn
    finally:
        conn.close()


def sql(settings: Settings, query: str, *params: object) -> list[tuple[Any, ...]]:
    with store(settings) as conn:
        return [tuple(r) for r in conn.execute(query, params).fetchall()]


def plant_debtor(settings: Settings, tenant: str, subject: str) -> None:
    with store(settings) as conn:
        conn.execute(
            "INSERT INTO debtors VALUES (?, ?, 'Thandi', 'Nkosi', ?, '1980-01-01', ?)",
            (tenant, subject, SA_ID, datetime.now(UTC).isoformat()),
        )
        conn.executemany(
            "INSERT INTO contact_points (tenant_id, subject_ref, kind, value, is_primary)"
            " VALUES (?, ?, ?, ?, 1)",
            [(tenant, subject, "email", EMAIL), (tenant, subject, "phone", PHONE)],
        )


def keys(settings: Settings) -> Keys:
    return Keys.from_settings(settings)


def rectify_email(
    request_id: str, value: str, *, verified: bool, field: str = "contact_points.email"
) -> DsrRequested:
    """The issue's attack: a rectification of the e-mail address (or ``field``), claimed
    verified."""
    return DsrRequested(
        tenant_id="acme",
        payload=DsrRequestedPayload.model_validate(
            {
                "request_id": request_id,
                "kind": "rectification",
                "identity_verified": verified,
                "subject": {"subject_ref": "debtor-1"},
                "received_at": datetime.now(UTC),
                "details": {
                    "kind": "rectification",
                    "corrections": [{"field": field, "value": value}],
                },
                "reply_to": {"channel": "email"},
            }
        ),
    )


def access(request_id: str, subject: str = "debtor-1") -> DsrRequested:
    return DsrRequested(
        tenant_id="acme",
        payload=DsrRequestedPayload.model_validate(
            {
                "request_id": request_id,
                "kind": "access",
                "identity_verified": True,
                "subject": {"subject_ref": subject},
                "received_at": datetime.now(UTC),
                "details": {"kind": "access"},
                "reply_to": {"channel": "email"},
            }
        ),
    )


def verified(request_id: str) -> DsrVerified:
    return DsrVerified(
        tenant_id="acme",
        payload=DsrVerifiedPayload(
            request_id=request_id,
            verified_by="agent-7",
            method="id_document",
            verified_at=datetime.now(UTC),
        ),
    )


async def dead_letters(settings: Settings, worker: str, n: int) -> list[Any]:
    url = settings.amqp_url.get_secret_value()
    name = f"{settings.namespace}.{worker}.dlq"

    async def arrived() -> bool:
        return await queue_depth(url, name) >= n

    await wait_until(arrived)
    return await drain_queue(url, name)


async def raw_publish(
    settings: Settings,
    routing_key: str,
    body: bytes,
    headers: dict[str, Any] | None = None,
    exchange: str | None = None,
    user_id: str | None = None,
) -> None:
    """What an attacker with broker access does: plain aio-pika, no privacyops client."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=5)
    async with connection:
        channel = await connection.channel()
        target = await channel.get_exchange(
            exchange or f"{settings.namespace}.events", ensure=False
        )
        await target.publish(
            aio_pika.Message(body, headers=headers or {}, user_id=user_id),
            routing_key=routing_key,
        )


def status_of(settings: Settings, request_id: str) -> str | None:
    rows = sql(settings, "SELECT status FROM dsr_requests WHERE request_id = ?", request_id)
    return str(rows[0][0]) if rows else None


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())
