"""The DSR tests' fixture: a running DSR (and consent) worker on a seeded store."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings
from infra.runtime.service import Service
from tests.support.dsr import start_dsr
from tests.support.helpers import ServiceFactory


@pytest.fixture
async def dsr(settings: Settings, start_service: ServiceFactory, tmp_path: Path) -> Service:
    return await start_dsr(settings, start_service, tmp_path)
