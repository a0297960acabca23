"""Notifier throughput: N notices from the outbox to the file channel and to a local SMTP server.

    .venv/bin/python bench/notify_throughput.py --notices 500

Seeds N ``consent_confirmation`` notices and contact points in a temporary SQLite file,
starts a ``Service`` running the notifier (its own namespace, deleted at the end) and times
outbox -> relay -> broker -> render -> send -> ``sent`` for all of them, through the file
channel and through a local SMTP server (aiosmtpd, counting what it receives). Prints
figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from aiosmtpd.controller import Controller

from config.settings import Settings
from infra import logging as plog
from infra import topology
from infra.keys import store_key
from infra.runtime.service import Service
from infra.runtime.session import session
from infra.runtime.worker import Effects, commit_effects
from infra.store.sqlite import connect_file
from messages.names import Names
from workers import registry
from workers.notifier import NotifierWorker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONTEXT = {"channel": "email", "status": "granted", "effective_at": "2026-01-15T10:00:00+00:00"}


class Counter:
    """An aiosmtpd handler that accepts and counts."""

    received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(settings: Settings, notices: int) -> None:
    """Contact points and queued notices, as a worker would commit them."""
    async with session(settings, registry.schemas(), migrate=True) as opened:
        batch = []
        for i in range(notices):
            effects = Effects.standalone("bench", "acme")
            effects.write(
                "INSERT INTO contact_points (tenant_id, subject_ref, kind, value)"
                " VALUES (?, ?, ?, ?)",
                ("acme", f"debtor-{i}", "email", f"subject{i}@example.org"),
            )
            effects.notify(f"debtor-{i}", "consent_confirmation", "email", CONTEXT)
            batch.append(effects)
        await commit_effects(opened.store, None, *batch)


async def delete_namespace(namespace: str, delays: list[int]) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await topology.delete(channel, Names(namespace), [NotifierWorker.name], delays)


async def run(transport: str, notices: int, directory: Path) -> float:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    port = free_port()
    smtp = Controller(Counter(), hostname="127.0.0.1", port=port)
    smtp.start()
    settings = Settings(
        amqp_url=AMQP_URL,
        namespace=namespace,
        db_path=directory / f"{transport}.db",
        notify_dir=directory / transport,
        notify_email_transport=transport,
        smtp_port=port,
        smtp_security="none",
        smtp_rate_per_s=10_000,
        outbox_poll_s=0.05,
        workers=["notifier"],
        log_level="warning",
        key_dir=directory / "keys",
    )
    await seed(settings, notices)
    service = Service(settings, [NotifierWorker(settings)], schemas=registry.schemas())
    started = time.perf_counter()
    await service.start()
    try:
        while True:
            conn = connect_file(settings.db_path, store_key(settings))
            try:
                (sent,) = conn.execute(
                    "SELECT count(*) FROM notification_outbox WHERE status = 'sent'"
                ).fetchone()
            finally:
                conn.close()
            if sent >= notices:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        smtp.stop()
        await delete_namespace(namespace, settings.retry_delays_ms)
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
