"""Helpers shared by the tests: the broker's test namespaces, builders, polling, logs."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

# The broker helpers the fault kit (bench/, which may not import tests) shares with the tests.
from bench.faultkit.common import delete_namespace as delete_namespace
from bench.faultkit.common import queue_depth as queue_depth
from bench.faultkit.common import wait_until as wait_until
from config.settings import Settings
from infra.runtime.service import Service
from infra.runtime.session import session
from infra.store import Store
from messages.consent import ConsentChanged, ConsentChangedPayload, Evidence

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: The installed ``privacyops`` command, beside the interpreter running the tests.
BIN = Path(sys.executable).parent / "privacyops"

#: ``start_service(workers=None, **setting_overrides)``: a started Service, stopped after.
ServiceFactory = Callable[..., Awaitable[Service]]


@asynccontextmanager
async def migrated_store(settings: Settings) -> AsyncIterator[Store]:
    """The settings' store, its schema brought up to date with every registered component."""
    from workers import registry

    async with session(settings, registry.schemas(), migrate=True) as opened:
        yield opened.store


def consent_changed(
    subject_ref: str = "debtor-1",
    *,
    status: str = "granted",
    channel: str = "email",
    tenant_id: str = "acme",
    occurred_at: datetime | None = None,
    source: str = "web_form",
    reference: str = "form-1",
    purpose: str = "direct_marketing",
    **evidence: Any,
) -> ConsentChanged:
    return ConsentChanged(
        tenant_id=tenant_id,
        occurred_at=occurred_at or datetime.now(UTC),
        payload=ConsentChangedPayload(
            subject_ref=subject_ref,
            channel=channel,  # type: ignore[arg-type]
            purpose=purpose,
            status=status,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            evidence=Evidence(reference=reference, **evidence),
        ),
    )


async def drain_queue(url: str, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take every message currently in a queue (acknowledged, so it is removed)."""
    connection = await aio_pika.connect(url, timeout=5)
    taken = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def store_env(settings: Settings) -> dict[str, str]:
    """The environment a ``privacyops`` subprocess needs to use the test's store."""
    env = {"PRIVACYOPS_DB_PATH": str(settings.db_path)}
    if settings.store_url is not None:
        env["PRIVACYOPS_STORE_URL"] = settings.store_url.get_secret_value()
    if settings.sources:
        urls = {name: url.get_secret_value() for name, url in settings.sources.items()}
        env["PRIVACYOPS_SOURCES"] = json.dumps(urls)
    if settings.datamap_path is not None:
        env["PRIVACYOPS_DATAMAP_PATH"] = str(settings.datamap_path)
    return env


#: A publisher secret for tests (the keyring wants 32 characters at least).
TEST_SECRET = "test-secret-" + "k" * 32


def write_keyring(directory: Path, *keys: dict[str, Any]) -> Path:
    """A publishers' keyring file (0600) with the given entries; defaults fill the rest."""
    from config.secrets import create_secret

    entries = [{"secret": TEST_SECRET, **key} for key in keys]
    path = directory / f"keyring-{len(list(directory.glob('keyring-*')))}.json"
    create_secret(path, json.dumps({"keys": entries}).encode())
    return path


def security_env(settings: Settings) -> dict[str, str]:
    """What a subprocess needs to open the test's store and keys: its key directory, the
    store's encryption, and (for ``privacyops run``) the development flag when the test
    runs without a keyring."""
    return {
        "PRIVACYOPS_KEY_DIR": str(settings.key_dir),
        "PRIVACYOPS_DB_ENCRYPTION": settings.db_encryption,
        "PRIVACYOPS_ALLOW_UNSIGNED": "true",
    }


def run_cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        **store_env(settings),
        "PRIVACYOPS_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms),
        "PRIVACYOPS_LOG_FORMAT": "json",
        "PRIVACYOPS_WORKERS": '["consent"]',
        **security_env(settings),
    }
    executable = str(BIN) if BIN.exists() else shutil.which("privacyops") or "privacyops"
    return subprocess.run(
        [executable, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def contactable(
    store: Store,
    settings: Settings,
    tenant_id: str,
    subject_ref: str,
    channel: str,
    purpose: str = "direct_marketing",
) -> bool:
    """``is_contactable`` with the digest key of the test's settings."""
    from workers.consent import is_contactable
    from workers.platform.keys import digest_key

    return await is_contactable(
        store, tenant_id, subject_ref, channel, purpose, digest_key=digest_key(settings)
    )
