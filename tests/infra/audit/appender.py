"""A process appending audit rows as fast as it can (the two-process test's load).

``python -m tests.infra.audit.appender START_FILE TRANSACTIONS SEED``: waits for
START_FILE (so both processes start together), then commits TRANSACTIONS
transactions of 1-3 audit rows each, mostly for ``acme``, some for ``beta`` too,
through the store the environment names. Prints the number of rows it wrote.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from random import Random

from config.settings import Settings
from infra.runtime.session import session
from infra.runtime.worker import Effects, commit_effects
from workers import registry


async def run(start: Path, transactions: int, seed: int) -> int:
    rng = Random(seed)
    written = 0
    async with session(Settings(), registry.schemas()) as opened:
        deadline = time.monotonic() + 30
        while not start.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - a file
            await asyncio.sleep(0.01)
        for i in range(transactions):
            batch = []
            for tenant in ("acme", "beta") if i % 5 == 0 else ("acme",):
                effects = Effects.standalone("load", tenant)
                for n in range(rng.randint(1, 3)):
                    effects.audit("thing_done", f"debtor-{seed}-{i}", n=n)
                    written += 1
                batch.append(effects)
            await commit_effects(opened.store, None, *batch)
    return written


if __name__ == "__main__":
    print(asyncio.run(run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
