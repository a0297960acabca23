"""The command line's plumbing: settings, logging, exit codes, one way to reach the store.

The commands themselves are registered by the composition root
(``workers/main.py``): its own (``run``, ``topology``, ``db``...), each worker's
(``workers/<name>/cli.py``) and the dead-letter tools (``infra/dlq/cli.py``).
Every command gets an ``App``: the settings and what the registry knows (every
component's schema, every worker's name), so a command opens the store the
same way the service does (``App.session``) and never builds one itself.

Exit codes: 0 done (a query with an empty answer included: ``dsr list --json``
prints ``[]``), 1 failed or nothing to act on, 2 bad usage, invalid input or a store
whose schema is not the code's (``privacyops db migrate``). Every parser's epilog
says so and lists the environment variables (``Parser``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeAlias, TypeVar, cast

from pydantic import ValidationError

from config.settings import Settings
from infra import logging as plog
from infra.redaction import describe_error
from infra.runtime.session import Session, session
from infra.store import Store
from infra.store.migrations import Schema
from messages.errors import PrivacyOpsError, StoreOutOfDate

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")

#: The ``add_subparsers`` object a registrar adds its commands to.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True)
class App:
    """What a command needs from the composition root."""

    settings: Settings
    #: Every registered component's schema (the runtime's is added by the session).
    schemas: tuple[Schema, ...]
    #: Every registered worker's name, in registry order.
    worker_names: tuple[str, ...]

    def session(
        self, *, broker: bool = False, notices: bool = False, migrate: bool = False
    ) -> AbstractAsyncContextManager[Session]:
        """The store (schema checked), and the broker and relays when asked for."""
        return session(self.settings, self.schemas, broker=broker, notices=notices, migrate=migrate)

    def with_store(self, action: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``action`` on the store (schema checked) and close it: a query command."""

        async def run() -> T:
            async with self.session() as opened:
                return await action(opened.store)

        return asyncio.run(run())


Handler = Callable[[argparse.Namespace, App], int]
Registrar = Callable[[SubParsers], None]


EXIT_CODES = (
    "exit codes: 0 done (a query that finds nothing included), 1 failed or nothing to act on,\n"
    "2 bad usage, invalid input, or a store whose schema is not the code's"
)


def epilog() -> str:
    """Exit codes and the environment every command reads (one variable per setting)."""
    names = [f"PRIVACYOPS_{name.upper()}" for name in Settings.model_fields]
    lines, line = [], " "
    for name in names:
        if len(line) + len(name) > 88:
            lines.append(line)
            line = " "
        line += f" {name}"
    lines.append(line)
    return (
        f'{EXIT_CODES}\n\nenvironment (one variable per setting, README "Configuration"):\n'
        + "\n".join(lines)
    )


class Parser(argparse.ArgumentParser):
    """Every command's parser: the exit codes and the environment in its epilog."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", epilog())
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def parser(description: str, registrars: Sequence[Registrar]) -> argparse.ArgumentParser:
    built = Parser(prog="privacyops", description=description)
    built.add_argument("--version", action="version", version=f"privacyops {version()}")
    # Parser is an ArgumentParser: registrars see the usual type
    sub = cast(SubParsers, built.add_subparsers(dest="command", required=True, parser_class=Parser))
    for register in registrars:
        register(sub)
    return built


def version() -> str:
    try:
        return metadata.version("privacyops")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def main(
    built: argparse.ArgumentParser,
    make_app: Callable[[Settings], App],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse, read the settings once, configure logging, run the command, map errors.

    Every file the process creates (store, WAL, notices, exports, keys, dead-letter
    exports) is its owner's alone: umask 077, on top of the explicit modes each writer
    sets (issue 11, D9)."""
    os.umask(0o077)
    args = built.parse_args(argv)
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
        return handler(args, make_app(settings))
    except ValueError as exc:
        print(f"privacyops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreOutOfDate as exc:
        print(f"privacyops: {exc.code}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PrivacyOpsError as exc:
        print(f"privacyops: {exc.code}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
