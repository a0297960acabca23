"""Small pieces the fault scenarios and the soak need: messages, the store, the broker,
and ``privacyops run`` as a subprocess. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aio_pika
import psycopg

from config.datamap import CONFIG_DIR
from config.settings import Settings
from infra import topology
from messages.consent import ConsentChanged, ConsentChangedPayload, Evidence
from messages.names import Names

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: ``db_path`` -> the PostgreSQL URL the store really is (a scenario on PostgreSQL).
_POSTGRES: dict[Path, str] = {}


def data_map(folder: Path, tables: Sequence[str], source: str = "platform") -> Path:
    """config/datamap.toml with ``data_source = source`` for each named table, written to
    ``folder``; its path (``PRIVACYOPS_DATAMAP_PATH``)."""
    text = (CONFIG_DIR / "datamap.toml").read_text()
    for table in tables:
        text = re.sub(
            rf"^\[tables\.{table}\]$",
            f'[tables.{table}]\ndata_source = "{source}"',
            text,
            flags=re.MULTILINE,
        )
    path = folder / "datamap.toml"
    path.write_text(text)
    return path


def consent_changed(subject_ref: str) -> ConsentChanged:
    return ConsentChanged(
        tenant_id="acme",
        occurred_at=datetime.now(UTC),
        payload=ConsentChangedPayload(
            subject_ref=subject_ref,
            channel="email",
            purpose="direct_marketing",
            status="granted",
            source="web_form",
            evidence=Evidence(reference="form-1"),
        ),
    )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 20.0, interval: float = 0.05
) -> None:
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - polling the store and the broker
            await asyncio.sleep(interval)


def register_store(settings: Settings) -> None:
    """Let ``connect(settings.db_path)`` reach the settings' PostgreSQL store, if any."""
    if settings.store_url is not None:
        _POSTGRES[settings.db_path] = settings.store_url.get_secret_value()


@contextlib.contextmanager
def connect(db: Path, timeout: float = 30) -> Iterator[Any]:
    """Plain SQL on the scenario's store (no parameters): SQLite, or the registered
    PostgreSQL schema."""
    url = _POSTGRES.get(db)
    if url is None:
        conn = sqlite3.connect(db, timeout=timeout)
        try:
            with conn:
                yield conn
        finally:
            conn.close()
        return
    schema = url.rsplit("search_path=", 1)[-1] if "search_path=" in url else "public"
    with psycopg.connect(
        url.split("?", 1)[0], options=f"-c search_path={schema}", connect_timeout=int(timeout)
    ) as pg:
        yield pg


async def delete_namespace(url: str, names: Names, workers: list[str], delays: list[int]) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        await topology.delete(await connection.channel(), names, workers, delays)


async def queue_depth(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        result = await channel.declare_queue(queue_name, passive=True)
        return int(result.declaration_result.message_count or 0)


# -- privacyops run as a subprocess -----------------------------------------------------


def privacyops_bin() -> str:
    found = shutil.which("privacyops", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError(f"no privacyops script next to {sys.executable}")
    return found


def worker_env(settings: Settings) -> dict[str, str]:
    """The consent worker alone, the settings' broker, store and waits, JSON logs."""
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        "PRIVACYOPS_DB_PATH": str(settings.db_path),
        "PRIVACYOPS_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms),
        "PRIVACYOPS_BATCH_WINDOW_MS": str(settings.batch_window_ms),
        "PRIVACYOPS_SHUTDOWN_DRAIN_S": str(settings.shutdown_drain_s),
        "PRIVACYOPS_HANDLER_TIMEOUT_S": str(settings.handler_timeout_s),
        "PRIVACYOPS_CONNECT_TIMEOUT_S": str(settings.connect_timeout_s),
        "PRIVACYOPS_PUBLISH_TIMEOUT_S": str(settings.publish_timeout_s),
        "PRIVACYOPS_WORKERS": json.dumps(["consent"]),
        "PRIVACYOPS_METRICS_PORT": "0",
        "PRIVACYOPS_KEY_DIR": str(settings.key_dir),
        "PRIVACYOPS_DB_ENCRYPTION": settings.db_encryption,
        "PRIVACYOPS_ALLOW_UNSIGNED": "true",
        "PRIVACYOPS_LOG_FORMAT": "json",
        "PRIVACYOPS_LOG_LEVEL": "info",
    }
    if settings.store_url is not None:
        env["PRIVACYOPS_STORE_URL"] = settings.store_url.get_secret_value()
    if settings.amqp_urls:
        env["PRIVACYOPS_AMQP_URLS"] = json.dumps(settings.broker_urls)
    return env


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


class WorkerProcess:
    """``privacyops run --migrate`` in a subprocess, its JSON log lines in a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, within: float = 60.0) -> None:
        log: IO[bytes]
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                privacyops_bin(),
                "run",
                "--migrate",
                env=worker_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        async def started() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"worker exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text()[-3000:]
                )
            return any(e.get("event") == "service_started" for e in _events(self.log_path))

        await wait_until(started, within=within, interval=0.05)

    async def kill(self) -> None:
        """SIGKILL (no drain, no goodbye)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            async with asyncio.timeout(30):
                await self.proc.wait()
