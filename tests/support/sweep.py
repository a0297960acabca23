"""What the session's namespaces left on the machine's broker, deleted when it ends.

Each test deletes the topology it knows of (``delete_namespace``). A queue declared by a
subprocess, or a retry tier of delays the test did not pass on, can escape that, and
quorum queues left behind cost the shared broker memory and file handles across runs.
When the session ends, every queue and exchange named under one of its namespaces goes;
the broker lists them (``rabbitmqctl``, on the machine the suite's broker runs on).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

import aio_pika

#: Every namespace a test of this session was given (the ``namespace`` fixture).
NAMESPACES: set[str] = set()


def listed(kind: str) -> list[str]:
    """The names of the broker's ``queues`` or ``exchanges``; none when it cannot say."""
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-s", f"list_{kind}", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


async def sweep(url: str, namespaces: Iterable[str]) -> int:
    """Delete what is left under ``namespaces``; how many queues and exchanges went."""
    prefixes = tuple(f"{namespace}." for namespace in namespaces)
    if not prefixes:
        return 0
    queues = [name for name in listed("queues") if name.startswith(prefixes)]
    exchanges = [name for name in listed("exchanges") if name.startswith(prefixes)]
    if not queues and not exchanges:
        return 0
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    return len(queues) + len(exchanges)
