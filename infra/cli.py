"""The ``privacyops`` command line.

    privacyops run [--worker NAME ...]     run workers until SIGTERM/SIGINT
    privacyops topology declare            declare exchanges and queues
    privacyops publish FILE|-              validate, then publish JSON messages
    privacyops schema [--out DIR]          write JSON Schemas and the AsyncAPI file
    privacyops consent check T S CHANNEL   suppression check for one channel

Exit codes: 0 done, 1 failed or nothing matched, 2 bad usage or invalid input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.settings import Settings
from infra import cli_admin, rabbit, topology
from infra import logging as plog
from infra.errors import PermanentError, PrivacyOpsError
from infra.notify import cli as notify_cli
from infra.redaction import describe_error
from infra.service import Service
from infra.store import SqliteStore
from messages.envelope import Envelope
from messages.publisher import Publisher
from messages.registry import MESSAGE_TYPES, decode
from workers import security_cli
from workers.dsr import cli as dsr_cli
from workers.registry import build_workers

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


Handler = Callable[[argparse.Namespace, Settings], int]


def _register_core(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run workers until SIGTERM/SIGINT")
    run.add_argument("--worker", action="append", dest="workers", metavar="NAME")
    run.set_defaults(handler=_run)
    topo = sub.add_parser("topology", help="broker topology")
    topo.add_argument("action", choices=["declare"])
    topo.add_argument("--worker", action="append", dest="workers", metavar="NAME")
    topo.set_defaults(handler=_topology)
    pub = sub.add_parser(
        "publish", help="validate and publish messages (JSON object, array or JSON Lines)"
    )
    pub.add_argument("file", help="path, or - for standard input")
    pub.set_defaults(handler=_publish)
    schema = sub.add_parser("schema", help="write JSON Schemas and docs/asyncapi.json")
    schema.add_argument("--out", type=Path, default=Path("docs"))
    schema.set_defaults(handler=_schema)
    consent = sub.add_parser("consent", help="consent queries")
    consent.add_argument("action", choices=["check"])
    consent.add_argument("tenant")
    consent.add_argument("subject_ref")
    consent.add_argument("channel")
    consent.set_defaults(handler=_consent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privacyops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"privacyops: invalid settings: {exc.error_count()} error(s)", file=sys.stderr)
        for error in exc.errors(include_input=False, include_url=False):
            print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return EXIT_USAGE
    # Workers log to stdout; every other command keeps stdout for its own output.
    plog.configure(
        settings.log_level, settings.log_format, sys.stdout if args.command == "run" else sys.stderr
    )
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except ValueError as exc:
        print(f"privacyops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PrivacyOpsError as exc:
        print(f"privacyops: {exc.code}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers:
        settings = settings.with_changes(workers=args.workers)
    service = Service(settings, serve_ops=True)
    asyncio.run(service.run_until_signalled())
    return EXIT_OK


def _topology(args: argparse.Namespace, settings: Settings) -> int:
    workers = build_workers(args.workers or settings.workers, settings)

    async def declare() -> None:
        connection = await rabbit.connect(
            settings.amqp_url.get_secret_value(), settings.connect_timeout_s
        )
        try:
            channel = await rabbit.open_channel(connection)
            await topology.declare(
                channel,
                topology.Names(settings.namespace),
                {w.name: w.handles for w in workers},
                settings.retry_delays_ms,
                settings.delivery_limit,
            )
        finally:
            await connection.close()

    asyncio.run(declare())
    print(
        f"declared topology for {', '.join(w.name for w in workers)} "
        f"in namespace {settings.namespace}"
    )
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
        if MESSAGE_TYPES[message.type][1] != "upstream":
            raise ValueError(f"message {index}: {message.type} is published by privacyops only")
        messages.append(message)
    return messages


def _publish(args: argparse.Namespace, settings: Settings) -> int:
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
        async with Publisher.from_settings(settings) as publisher:
            for message in messages:
                await publisher.publish(message)

    asyncio.run(publish())
    print(f"published {len(messages)} message(s)")
    return EXIT_OK


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from messages.schema import write

    for path in write(args.out):
        print(path)
    return EXIT_OK


def _consent(args: argparse.Namespace, settings: Settings) -> int:
    from workers.consent import ConsentWorker, is_contactable

    async def check() -> bool:
        store = SqliteStore(settings.db_path, settings.db_busy_timeout_ms)
        await store.open([ConsentWorker.schema])
        try:
            return await is_contactable(store, args.tenant, args.subject_ref, args.channel)
        finally:
            await store.close()

    contactable = asyncio.run(check())
    print("contactable" if contactable else "suppressed")
    return EXIT_OK if contactable else EXIT_FAILED


#: Each feature adds its subcommands with a ``register(subparsers)`` function here.
REGISTRARS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _register_core,
    dsr_cli.register,
    cli_admin.register,
    security_cli.register,
    notify_cli.register,
]
