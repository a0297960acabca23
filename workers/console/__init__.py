"""The web console's pages (requests, incidents, dead letters, consent) and the subject
download page, on the generic server of ``infra/console``; ``privacyops console`` runs both.

Each page module holds its routes and a ``Section`` (menu entry); ``SECTIONS`` lists
them in menu order, the way ``workers/registry.py`` lists workers. Every action calls
the function the CLI calls for it (``workers/security/admin.py``,
``infra/dlq/admin.py``, ``workers/dsr/downloads.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings
from infra.console.web import Listener, Section, build
from infra.runtime.session import Session
from workers.console import consent, deadletters, incidents, requests
from workers.console.download import DownloadPage

TEMPLATES = Path(__file__).resolve().parent / "templates"
SECTIONS: tuple[Section, ...] = (
    requests.SECTION,
    incidents.SECTION,
    deadletters.SECTION,
    consent.SECTION,
)


@dataclass(frozen=True)
class Running:
    console_port: int
    download_port: int


@asynccontextmanager
async def serving(
    settings: Settings, opened: Session, worker_names: Sequence[str]
) -> AsyncIterator[Running]:
    """The console and the download page, each on its own listener, until the block ends."""
    timeout = settings.shutdown_drain_s
    app = build(settings, opened, SECTIONS, [TEMPLATES], worker_names)
    console = Listener(app, "console", timeout)
    download = Listener(DownloadPage(settings, opened).app(), "download page", timeout)
    await console.start(settings.console_host, settings.console_port)
    try:
        await download.start(settings.download_host, settings.download_port)
        try:
            yield Running(console.port, download.port)
        finally:
            await download.stop()
    finally:
        await console.stop()
