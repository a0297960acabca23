"""``privacyops admin ...`` (console accounts) and ``privacyops console`` (serve it).

privacyops admin add NAME [--role viewer|operator] [--tenant T ...] [--replace]
                               the password is read from stdin (or asked on a terminal)
privacyops admin list [--json]
privacyops admin disable NAME  ends the admin's sessions too
privacyops console [--migrate] the console (console_host:console_port, 127.0.0.1:8480)
                               and the download page (download_host:download_port)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import signal
import sys
from datetime import UTC, datetime

from infra.cli import EXIT_OK, App, SubParsers
from infra.console import accounts
from infra.store import Store
from workers.console import serving


def register(sub: SubParsers) -> None:
    admin = sub.add_parser("admin", help="console admin accounts").add_subparsers(
        dest="admin_action", required=True
    )
    add = admin.add_parser("add", help="a named admin (password from stdin, argon2-hashed)")
    add.add_argument("name", help="the name shown in the audit log")
    add.add_argument("--role", choices=accounts.ROLES, default="viewer", help="default: viewer")
    add.add_argument(
        "--tenant",
        action="append",
        dest="tenants",
        default=[],
        help="restrict to this tenant (repeatable; default: every tenant)",
    )
    add.add_argument("--replace", action="store_true", help="reset an existing admin")
    add.set_defaults(handler=_add)
    listing = admin.add_parser("list", help="admins, roles and tenants")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    disable = admin.add_parser("disable", help="disable an admin and end their sessions")
    disable.add_argument("name", help="the admin's name")
    disable.set_defaults(handler=_disable)
    console = sub.add_parser("console", help="serve the web console and the download page")
    console.add_argument(
        "--migrate", action="store_true", help="bring the store's schema up to date first"
    )
    console.set_defaults(handler=_serve)


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _add(args: argparse.Namespace, app: App) -> int:
    password = _password()

    async def act(store: Store) -> bool:
        return await accounts.add(
            store,
            args.name,
            password,
            args.role,
            args.tenants,
            datetime.now(UTC),
            replace=args.replace,
        )

    created = app.with_store(act)
    print(f"{'added' if created else 'reset'} {args.name} ({args.role})")
    return EXIT_OK


def _list(args: argparse.Namespace, app: App) -> int:
    rows = app.with_store(accounts.listing)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        scope = ", ".join(r["tenants"]) or "all tenants"
        state = " (disabled)" if r["disabled_at"] else ""
        print(f"{r['name']:<20} {r['role']:<9} {scope}{state}")
    return EXIT_OK


def _disable(args: argparse.Namespace, app: App) -> int:
    async def act(store: Store) -> bool:
        return await accounts.disable(store, args.name, datetime.now(UTC))

    if not app.with_store(act):
        raise ValueError(f"no active admin {args.name}")
    print(f"disabled {args.name}")
    return EXIT_OK


def _serve(args: argparse.Namespace, app: App) -> int:
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with (
            app.session(broker=True, migrate=args.migrate) as opened,
            serving(app.settings, opened, app.worker_names) as running,
        ):
            s = app.settings
            print(
                f"console on http://{s.console_host}:{running.console_port}/, download page"
                f" on http://{s.download_host}:{running.download_port}/download/<tenant>",
                file=sys.stderr,
            )
            await stop.wait()

    asyncio.run(run())
    return EXIT_OK
