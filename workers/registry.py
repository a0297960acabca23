"""The workers this build knows, by name; each factory takes the settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from config.settings import Settings
from infra.worker import Worker
from workers.consent import ConsentWorker
from workers.dsr import DsrWorker
from workers.notifier import NotifierWorker
from workers.security import SecurityWorker

WORKERS: dict[str, Callable[[Settings], Worker]] = {
    ConsentWorker.name: lambda settings: ConsentWorker(),
    DsrWorker.name: DsrWorker,
    NotifierWorker.name: NotifierWorker,
    SecurityWorker.name: SecurityWorker,
}


def build_workers(names: Iterable[str], settings: Settings) -> list[Worker]:
    unknown = sorted(set(names) - set(WORKERS))
    if unknown:
        raise ValueError(f"unknown worker(s): {', '.join(unknown)}; known: {sorted(WORKERS)}")
    return [WORKERS[name](settings) for name in dict.fromkeys(names)]
