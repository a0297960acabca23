"""The dead-letter tests' helpers: ``privacyops dlq`` as admins run it (a subprocess), the
store's rows, waiting for a queue's depth."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from config.settings import Settings
from tests.support.db import connect
from tests.support.helpers import BIN, queue_depth, security_env, store_env, wait_until


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        **store_env(settings),
        "PRIVACYOPS_LOG_FORMAT": "json",
        **security_env(settings),
    }


def dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "dlq", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def adlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(dlq, settings, *args)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(db) as conn:
        return conn.execute(sql, params).fetchall()


async def depth_reaches(settings: Settings, queue: str, n: int, within: float = 30) -> None:
    url = settings.amqp_url.get_secret_value()

    async def reached() -> bool:
        return await queue_depth(url, queue) == n

    await wait_until(reached, within=within)
