"""The workers this build knows, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from infra.worker import Worker
from workers.consent import ConsentWorker

WORKERS: dict[str, Callable[[], Worker]] = {
    ConsentWorker.name: ConsentWorker,
}


def build_workers(names: Iterable[str]) -> list[Worker]:
    unknown = sorted(set(names) - set(WORKERS))
    if unknown:
        raise ValueError(f"unknown worker(s): {', '.join(unknown)}; known: {sorted(WORKERS)}")
    return [WORKERS[name]() for name in dict.fromkeys(names)]
