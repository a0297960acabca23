"""Real servers for the notifier tests: an SMTP server (aiosmtpd) and an SMS gateway
(aiohttp.web), both run in the test's event loop on a free local port."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config.settings import Settings
from infra.runtime.worker import Effects, commit_effects
from tests.support.db import connect
from tests.support.helpers import free_port, migrated_store


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it receives; refuses listed recipients."""

    refuse: set[str] = field(default_factory=set)
    on_data: Callable[[], None] | None = None
    received: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        if self.on_data is not None:
            self.on_data()
        return "250 2.0.0 queued"


async def start_smtp(mailbox: Mailbox, port: int = 0, **options: Any) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(mailbox, hostname="localhost", **options), "127.0.0.1", port
    )
    return server, int(server.sockets[0].getsockname()[1])


async def stop_server(server: asyncio.Server) -> None:
    server.close()
    await asyncio.wait_for(server.wait_closed(), timeout=5)


def self_signed(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 'localhost'/127.0.0.1 and the CA file a client must trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def authenticator(user: str, password: str) -> Callable[..., AuthResult]:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        return AuthResult(success=ok)

    return check


@dataclass
class Gateway:
    """An SMS gateway: Bearer auth, dedupe by Idempotency-Key, a settable status."""

    token: str
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        self.requests.append({"headers": dict(request.headers), "body": body})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorised"}, status=401)
        if self.status >= 300:
            return web.json_response({"error": "refused"}, status=self.status)
        self.delivered.setdefault(key, body)
        return web.json_response({"id": f"gw-{key}"})


async def start_gateway(gateway: Gateway) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/sms", gateway.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/sms"


async def seed(
    settings: Settings,
    tenant: str,
    subject_ref: str,
    kind: str,
    channel: str | None,
    context: dict[str, Any],
    contact_points: dict[str, str] | None = None,
) -> str:
    """Write contact points and one notice as a worker would (Effects.notify); its id."""
    async with migrated_store(settings) as store:
        async with store.transaction() as tx:
            for kind_, value in (contact_points or {}).items():
                tx.stage(
                    "INSERT INTO contact_points (tenant_id, subject_ref, kind, value)"
                    " VALUES (?, ?, ?, ?)",
                    (tenant, subject_ref, kind_, value),
                )
        effects = Effects.standalone("test", tenant)
        notice_id = effects.notify(subject_ref, kind, channel, context)
        await commit_effects(store, None, effects)
    return notice_id


def delivery(settings: Settings, notice_id: str) -> dict[str, Any] | None:
    with connect(settings.db_path, dict_rows=True) as conn:
        row = conn.execute(
            "SELECT o.status AS outbox_status, d.* FROM notification_outbox o"
            " LEFT JOIN notice_deliveries d ON d.notice_id = o.notice_id WHERE o.notice_id = ?",
            (notice_id,),
        ).fetchone()
    return dict(row) if row else None
