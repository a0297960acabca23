"""The workers this build knows, one line each, and everything derived from that list.

Adding a worker: its message module (and its line in ``messages.registry.FAMILIES``),
its package under ``workers/`` (handlers, rules, tables, CLI commands), and one
``Registration`` line below. The default worker list, the store's schema, the
dead-letter tools' queues and the command line all follow from this tuple.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from config.settings import Settings
from infra.cli import App, Registrar
from infra.console.tables import CONSOLE
from infra.runtime.worker import Worker
from infra.store.migrations import Schema
from workers.consent import ConsentWorker
from workers.consent import cli as consent_cli
from workers.console import cli as console_cli
from workers.dsr import DsrWorker
from workers.dsr import cli as dsr_cli
from workers.notifier import NotifierWorker
from workers.notifier import cli as notifier_cli
from workers.platform import cli as platform_cli
from workers.platform.tables import PLATFORM
from workers.security import SecurityWorker
from workers.security import cli as security_cli


@dataclass(frozen=True)
class Registration:
    """A worker class (built with the settings) and its commands."""

    worker: type[Worker]
    cli: Registrar | None = None


WORKERS: tuple[Registration, ...] = (
    Registration(ConsentWorker, consent_cli.register),
    Registration(DsrWorker, dsr_cli.register),
    Registration(NotifierWorker, notifier_cli.register),
    Registration(SecurityWorker, security_cli.register),
)

#: Schema and commands that belong to no worker: the platform's personal data, the console.
SHARED_SCHEMAS: tuple[Schema, ...] = (PLATFORM, CONSOLE)
SHARED_CLI: tuple[Registrar, ...] = (platform_cli.register, console_cli.register)


def names() -> tuple[str, ...]:
    return tuple(r.worker.name for r in WORKERS)


def schemas() -> tuple[Schema, ...]:
    """Every component's schema except the runtime's (the session adds that)."""
    own = tuple(r.worker.schema for r in WORKERS if r.worker.schema is not None)
    return (*SHARED_SCHEMAS, *own)


def build_workers(wanted: Sequence[str], settings: Settings) -> list[Worker]:
    """The named workers (every registered one when ``wanted`` is empty), built once each."""
    known = {r.worker.name: r.worker for r in WORKERS}
    chosen = list(dict.fromkeys(wanted)) or list(known)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"unknown worker(s): {', '.join(unknown)}; known: {sorted(known)}")
    return [known[name](settings) for name in chosen]  # type: ignore[call-arg]


def cli_registrars() -> tuple[Registrar, ...]:
    return (*SHARED_CLI, *(r.cli for r in WORKERS if r.cli is not None))


def app(settings: Settings) -> App:
    return App(settings=settings, schemas=schemas(), worker_names=names())
