"""The attack suite's fixtures: a signed, encrypted deployment on the real broker and store.

``secured`` is the test's settings with a publishers' keyring (three keys, below), an
SQLCipher store and its own key, export and notice directories. ``start_secured``
starts a Service with those settings; ``publisher_for(key_id)`` signs as that key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from infra.publisher import Publisher
from infra.runtime.service import Service
from infra.runtime.worker import Worker
from tests.security.support import KEYS, secret_of
from tests.support.helpers import ServiceFactory, write_keyring


@pytest.fixture
def secured(settings: Settings, tmp_path: Path) -> Settings:
    keyring = write_keyring(tmp_path, *KEYS)
    return settings.with_changes(
        signing_keys_file=keyring,
        db_encryption="sqlcipher",
        export_dir=tmp_path / "exports",
        notify_dir=tmp_path / "notices",
        restriction_lift_notice_hours=0,
    )


SECURED_FIELDS = (
    "signing_keys_file",
    "db_encryption",
    "export_dir",
    "notify_dir",
    "restriction_lift_notice_hours",
)


@pytest.fixture
def start_secured(start_service: ServiceFactory, secured: Settings) -> Callable[..., Any]:
    async def start(workers: list[Worker], **overrides: Any) -> Service:
        base = {k: getattr(secured, k) for k in SECURED_FIELDS}
        return await start_service(workers, **{**base, **overrides})

    return start


@pytest.fixture
async def publisher_for(secured: Settings) -> AsyncIterator[Callable[[str], Any]]:
    opened: list[Publisher] = []

    async def make(key_id: str, *, secret: str | None = None) -> Publisher:
        client = Publisher(
            secured.amqp_url.get_secret_value(),
            namespace=secured.namespace,
            signing_key=secret or secret_of(key_id),
            key_id=key_id,
            timeout=5,
        )
        await client.connect()
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()
