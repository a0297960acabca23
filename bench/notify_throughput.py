"""Notifier throughput: N notices from the outbox to the file channel and to a local SMTP server.

    PYTHONPATH=. .venv/bin/python bench/notify_throughput.py --notices 500

Seeds N ``consent_confirmation`` notices and contact points in a temporary SQLite file,
starts a ``Service`` running the notifier (its own namespace, deleted at the end) and times
outbox -> relay -> broker -> render -> send -> ``sent`` for all of them. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from config.settings import Settings
from infra import logging as plog
from infra.service import Service
from infra.topology import Names
from tests.conftest import delete_namespace
from tests.workers.notify_servers import Mailbox, seed, start_smtp, stop_server
from workers.notifier import NotifierWorker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONTEXT = {"channel": "email", "status": "granted", "effective_at": "2026-01-15T10:00:00+00:00"}


async def run(transport: str, notices: int, directory: Path) -> float:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    mailbox = Mailbox()
    server, port = await start_smtp(mailbox)
    settings = Settings(
        amqp_url=AMQP_URL,
        namespace=namespace,
        db_path=directory / f"{transport}.db",
        notify_dir=directory / transport,
        notify_email_transport=transport,
        smtp_port=port,
        smtp_security="none",
        smtp_rate_per_s=10_000,
        notice_poll_s=0.05,
        workers=["notifier"],
        log_level="warning",
    )
    for i in range(notices):
        await seed(
            settings,
            "acme",
            f"debtor-{i}",
            "consent_confirmation",
            "email",
            CONTEXT,
            {"email": f"subject{i}@example.org"},
        )
    service = Service(settings, [NotifierWorker(settings)])
    started = time.perf_counter()
    await service.start()
    try:
        while True:
            with sqlite3.connect(settings.db_path) as conn:
                (sent,) = conn.execute(
                    "SELECT count(*) FROM notification_outbox WHERE status = 'sent'"
                ).fetchone()
            if sent >= notices:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        await stop_server(server)
        await delete_namespace(AMQP_URL, Names(namespace), ["notifier"], settings.retry_delays_ms)
    return notices / elapsed


async def main(args: Any) -> None:
    plog.configure("warning", "json")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("file", "smtp"):
            rate = await run(transport, args.notices, Path(tmp))
            print(f"{transport:5s} {args.notices} notices: {rate:8.1f} notices/s end to end")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--notices", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
