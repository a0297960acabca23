"""``privacyops admin add`` and ``privacyops console`` as a newcomer runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import aiohttp
import pytest

from config.settings import Settings
from infra.console import accounts
from tests.support.helpers import (
    BIN,
    free_port,
    migrated_store,
    run_cli,
    security_env,
    store_env,
    wait_until,
)
from tests.workers.console.support import PASSWORD, client, csrf_of


@pytest.mark.stores("sqlite")
async def test_add_an_admin_then_serve_log_in_and_stop_on_sigterm(settings: Settings) -> None:
    async with migrated_store(settings):
        pass
    added = run_cli(settings, "admin", "add", "alice", "--role", "operator", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    with pytest.raises(ValueError, match="at least 12 characters"):
        accounts.validate("bob", "short", "viewer", [])
    listed = json.loads(run_cli(settings, "admin", "list", "--json").stdout)
    assert [(a["name"], a["role"], a["tenants"]) for a in listed] == [("alice", "operator", [])]
    assert PASSWORD.encode() not in settings.db_path.read_bytes()

    port, download = free_port(), free_port()
    env = {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        "PRIVACYOPS_LOG_FORMAT": "json",
        "PRIVACYOPS_CONSOLE_PORT": str(port),
        "PRIVACYOPS_DOWNLOAD_PORT": str(download),
        **store_env(settings),
        **security_env(settings),
    }
    served = await asyncio.create_subprocess_exec(
        str(BIN), "console", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"

        async def answers() -> bool:
            try:
                async with aiohttp.ClientSession() as probe, probe.get(f"{base}/login") as page:
                    return page.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(answers, within=30, interval=0.2)
        async with client() as http:
            async with http.get(f"{base}/login") as page:
                token = csrf_of(await page.text())
            form = {"name": "alice", "password": PASSWORD, "csrf": token}
            async with http.post(f"{base}/login", data=form) as landed:
                assert landed.url.path == "/requests"
                assert "No request matches." in await landed.text()
        served.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(served.communicate(), 30)
        assert served.returncode == 0, err.decode()
    finally:
        if served.returncode is None:
            served.kill()
            await asyncio.wait_for(served.wait(), 10)
    assert PASSWORD not in (out + err).decode()
