"""The ``privacyops`` command line: the composition root.

    privacyops run [--worker NAME ...] [--migrate]   run workers until SIGTERM/SIGINT
    privacyops topology declare [--worker NAME ...]  declare exchanges and queues
    privacyops publish FILE|-                        validate, then publish JSON messages
    privacyops schema [--out DIR]                    write JSON Schemas and the AsyncAPI file
    privacyops db status|migrate                     the store's schema version, per component

plus each worker's commands (``consent``, ``dsr``, ``holds``, ``incidents``,
``notices``), ``seed`` and the dead-letter tools (``dlq``).

Exit codes: 0 done, 1 failed or nothing matched, 2 bad usage, invalid input or
a store whose schema is not the code's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.secrets import read_secret
from config.settings import Settings
from infra import keys_cli, progress, rabbit, topology
from infra.audit import cli as audit_cli
from infra.cli import EXIT_OK, EXIT_USAGE, App, SubParsers, parser
from infra.cli import main as cli_main
from infra.dlq import cli as dlq_cli
from infra.keys import signing_keyring, store_key
from infra.publisher import Publisher
from infra.runtime.audit import AuditWorker
from infra.runtime.service import Service
from infra.runtime.session import all_schemas
from infra.runtime.supervisor import Supervisor
from infra.store import migrations, open_store, sqlite
from messages.envelope import Envelope
from messages.errors import PermanentError
from messages.names import Names
from messages.registry import decode, publisher_of
from workers import registry


def _register_core(sub: SubParsers) -> None:
    run = sub.add_parser("run", help="run workers until SIGTERM/SIGINT")
    run.add_argument(
        "--worker",
        action="append",
        dest="workers",
        metavar="NAME",
        help="run this worker (repeatable; default: every registered worker)",
    )
    run.add_argument(
        "--migrate", action="store_true", help="bring the store's schema up to date first"
    )
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes competing on the queues (PostgreSQL, or SQLite taking "
        "turns); each serves its ops endpoint on metrics_port + its index",
    )
    run.set_defaults(handler=_run)
    topo = sub.add_parser("topology", help="broker topology")
    topo.add_argument("action", choices=["declare"], help="declare: create exchanges and queues")
    topo.add_argument(
        "--worker",
        action="append",
        dest="workers",
        metavar="NAME",
        help="only this worker's queues (repeatable; default: every worker)",
    )
    topo.add_argument("--json", action="store_true", help="print the summary as JSON")
    topo.set_defaults(handler=_topology)
    pub = sub.add_parser(
        "publish", help="validate and publish messages (JSON object, array or JSON Lines)"
    )
    pub.add_argument("file", help="path, or - for standard input")
    pub.set_defaults(handler=_publish)
    schema = sub.add_parser("schema", help="write JSON Schemas and docs/asyncapi.json")
    schema.add_argument(
        "--out", type=Path, default=Path("docs"), help="directory to write to (default docs)"
    )
    schema.set_defaults(handler=_schema)
    db = sub.add_parser("db", help="the store: schema status and migrate; encrypt, rekey")
    db.add_argument(
        "action",
        choices=["status", "migrate", "encrypt", "rekey"],
        help="status: versions per component; migrate: apply pending migrations; "
        "encrypt: SQLCipher a plain store; rekey: re-encrypt under a new key",
    )
    db.add_argument("--new-key-file", type=Path, help="rekey: the new key (32 bytes, base64, 0600)")
    db.add_argument("--json", action="store_true", help="print the components' state as JSON")
    db.set_defaults(handler=_db)


def build_parser() -> argparse.ArgumentParser:
    """The ``privacyops`` command: the core commands, every worker's, and infra's tools."""
    registrars = (
        _register_core,
        *registry.cli_registrars(),
        dlq_cli.register,
        keys_cli.register,
        audit_cli.register,
    )
    return parser("privacy workers for a debt-collection platform", registrars)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(build_parser(), registry.app, argv)


def _run(args: argparse.Namespace, app: App) -> int:
    settings = app.settings
    if args.processes < 1:
        raise ValueError("--processes must be at least 1")
    require_signing(settings)
    workers = registry.build_workers(args.workers or settings.workers, settings)
    if args.processes > 1:
        return _supervise(args, app)
    service = Service(
        settings, workers, schemas=app.schemas, serve_ops=True, migrate=bool(args.migrate)
    )
    asyncio.run(service.run_until_signalled())
    return EXIT_OK


def _supervise(args: argparse.Namespace, app: App) -> int:
    """Migrate once here, then N children each running ``run`` without ``--processes``."""
    if args.migrate:
        asyncio.run(_migrate(app))
    command = [sys.executable, "-m", "workers.main", "run"]
    for name in args.workers or ():
        command += ["--worker", name]
    supervisor = Supervisor(
        command,
        args.processes,
        metrics_port=app.settings.metrics_port,
        grace_s=app.settings.shutdown_drain_s * 3 + 5,
    )
    return asyncio.run(supervisor.run())


async def _migrate(app: App) -> None:
    async with app.session(migrate=True):
        pass


def require_signing(settings: Settings) -> None:
    """Issue 11, A1: no workers without a publishers' keyring, unless this is declared a
    development run (``PRIVACYOPS_ALLOW_UNSIGNED=true``; the quick start makes keys)."""
    if signing_keyring(settings) is None and not settings.allow_unsigned:
        path = settings.key_path(settings.signing_keys_file, "signing-keys.json")
        raise ValueError(
            f"no publisher keyring at {path}: create one (privacyops keys add KEY_ID, or "
            "privacyops keys dev for development) or set PRIVACYOPS_ALLOW_UNSIGNED=true "
            "for a development run that accepts unsigned messages"
        )


def _topology(args: argparse.Namespace, app: App) -> int:
    settings = app.settings
    workers = registry.build_workers(args.workers or settings.workers, settings)

    async def declare() -> None:
        connection = await rabbit.connect_with(settings)
        try:
            channel = await rabbit.open_channel(connection)
            await topology.declare(
                channel,
                Names(settings.namespace),
                # the runtime's audit consumer (admin.action) runs in every service
                {w.name: w.message_types() for w in [*workers, AuditWorker()]},
                settings.retry_delays_ms,
                settings.delivery_limit,
            )
        finally:
            await connection.close()

    asyncio.run(declare())
    declared = [w.name for w in workers]
    if args.json:
        print(json.dumps({"namespace": settings.namespace, "workers": declared}))
        return EXIT_OK
    print(f"declared topology for {', '.join(declared)} in namespace {settings.namespace}")
    return EXIT_OK


def read_messages(text: str) -> list[Envelope]:
    """Parse a JSON object, a JSON array or JSON Lines and validate every message."""
    stripped = text.strip()
    items: list[Any]
    try:
        document = json.loads(stripped)
    except json.JSONDecodeError:
        if "\n" not in stripped:
            raise
        items = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    else:
        items = document if isinstance(document, list) else [document]
    messages = []
    for index, item in enumerate(items, start=1):
        try:
            message = decode(json.dumps(item).encode())
        except PermanentError as exc:
            raise ValueError(f"message {index}: {exc.code}: {exc}") from None
        if publisher_of(message.type) != "upstream":
            raise ValueError(f"message {index}: {message.type} is published by privacyops only")
        messages.append(message)
    return messages


def _publish(args: argparse.Namespace, app: App) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        print(f"privacyops: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        messages = read_messages(text)
    except json.JSONDecodeError as exc:
        print(
            f"privacyops: not valid JSON (line {exc.lineno}, column {exc.colno})", file=sys.stderr
        )
        return EXIT_USAGE

    async def publish() -> None:
        async with Publisher.from_settings(app.settings) as publisher:
            for message in messages:
                await publisher.publish(message)

    asyncio.run(publish())
    print(f"published {len(messages)} message(s)")
    return EXIT_OK


def _schema(args: argparse.Namespace, app: App) -> int:
    from messages.schema import write

    for path in write(args.out):
        print(path)
    return EXIT_OK


def _db(args: argparse.Namespace, app: App) -> int:
    """``db status``: per component, the store's version and the code's; exit 1 if any
    differs. ``db migrate``: apply what is pending, printing each step."""
    if args.action in ("encrypt", "rekey"):
        return _encrypt(args, app)
    components = all_schemas(app.schemas)

    async def act() -> list[migrations.ComponentState]:
        store = open_store(app.settings)
        await store.open()
        try:
            if args.action == "migrate":
                pending = sum(
                    max(s.target - s.current, 0) for s in await migrations.status(store, components)
                )
                with progress.bar("migrating", pending) as advance:
                    applied = await migrations.migrate(store, components, lambda _c, _m: advance(1))
                for component, step in applied if not args.json else ():
                    print(f"{component}: applied {step.version} ({step.name})")
            return await migrations.status(store, components)
        finally:
            await store.close()

    states = asyncio.run(act())
    if args.json:
        print(json.dumps([{**vars(s), "state": s.state} for s in states], indent=2))
    else:
        for s in states:
            print(f"{s.component:<12} store {s.current:>3}  code {s.target:>3}  {s.state}")
    return EXIT_OK if all(s.state == "current" for s in states) else 1


def _encrypt(args: argparse.Namespace, app: App) -> int:
    """``db encrypt``: turn a plain store into an SQLCipher one (the plain file is kept as
    ``<db>.plain``, for the operator to shred once checked). ``db rekey``: re-encrypt
    the store under ``--new-key-file`` (then point ``db_key_file`` at it). Run both with
    the workers stopped."""
    settings = app.settings
    path = settings.db_path
    key = store_key(settings)
    if key is None:
        raise ValueError("db_encryption is none: nothing to encrypt with")
    if args.action == "rekey":
        if args.new_key_file is None:
            raise ValueError("rekey needs --new-key-file")
        new = base64.urlsafe_b64decode(read_secret(args.new_key_file))
        if len(new) != 32:
            raise ValueError("the new key must be 32 bytes, url-safe base64")
        sqlite.rekey(path, key, new)
        print(f"re-encrypted {path}; now set PRIVACYOPS_DB_KEY_FILE={args.new_key_file}")
        return EXIT_OK
    plain = path.with_name(path.name + ".plain")
    if plain.exists():
        raise ValueError(f"{plain} exists; move it away first")
    path.rename(plain)
    sqlite.encrypt_copy(plain, path, key)
    print(f"encrypted {path}; the plain copy is {plain}: delete it (shred) once checked")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
