"""Two processes appending to one tenant's chain at once keep it valid (issue 16).

The head row lock serialises the appends of a tenant: without it both processes
would link onto the same head, and the unique (tenant, seq) index or ``verify``
would show the fork.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from config.settings import Settings
from infra.audit.verify import verify
from infra.keys import Keys
from tests.support.db import sql
from tests.support.helpers import migrated_store, security_env, store_env

TRANSACTIONS = 150


async def test_two_processes_appending_to_one_chain_keep_it_valid(
    settings: Settings, tmp_path: Path
) -> None:
    async with migrated_store(settings):
        pass
    env = {**os.environ, **store_env(settings), **security_env(settings)}
    env["PRIVACYOPS_LOG_LEVEL"] = "warning"
    start = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.infra.audit.appender",
            str(start),
            str(TRANSACTIONS),
            str(seed),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seed in (1, 2)
    ]
    start.touch()
    async with asyncio.timeout(120):
        outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    written = sum(int(out.decode().split()[-1]) for out, _ in outputs)

    rows = sql(settings.db_path, "SELECT count(*) FROM audit_log")[0][0]
    assert rows == written
    for tenant in ("acme", "beta"):
        seqs = [
            s
            for (s,) in sql(
                settings.db_path,
                "SELECT seq FROM audit_log WHERE tenant_id = ? ORDER BY id",
                tenant,
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1))
    keys = Keys.from_settings(settings).audit.public_keys
    async with migrated_store(settings) as store:
        reports = await verify(store, keys, None)
    assert [(r.tenant_id, r.ok) for r in reports] == [("acme", True), ("beta", True)]
    assert sum(r.rows for r in reports) == written
