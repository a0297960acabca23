"""A 3-node RabbitMQ cluster of the test's own (issue 14): never the machine's broker.

Three ``RabbitNode``s (tests/support/rabbit_node.py) with distinct node names, AMQP and
Erlang distribution ports and data directories, and one shared Erlang cookie. The first
node starts alone; the others start, stop their application, join it, and start again.
Every step is bounded; ``close`` stops each node and removes its directories.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.faultkit.rabbit_node import RabbitNode


class RabbitCluster:
    def __init__(self, size: int = 3) -> None:
        cookie = uuid.uuid4().hex.upper()
        self.nodes = [RabbitNode(prefix=f"privacyops-c{i}", cookie=cookie) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, within_s: float = 180) -> None:
        deadline = time.monotonic() + within_s
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.start(within_s=within_s), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.stop_app()
            joined = node.ctl("join_cluster", first.node, timeout=60)
            if joined.returncode != 0:
                raise RuntimeError(f"{node.node} did not join {first.node}: {joined.stderr}")
            node.start_app(within_s=max(10.0, deadline - time.monotonic()))
        self.await_members(len(self.nodes), within_s=max(10.0, deadline - time.monotonic()))

    def running(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.running]

    def await_members(self, count: int, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError):
                status = self.running()[0].ctl("cluster_status", "--formatter", "json", timeout=30)
                if status.returncode == 0:
                    running = json.loads(status.stdout).get("running_nodes", [])
                    if len(running) >= count:
                        return
            time.sleep(1)
        raise RuntimeError(f"the test cluster did not reach {count} running nodes")

    def leader(self, queue: str, within_s: float = 30) -> RabbitNode:
        """The node leading a quorum queue, as a running node reports it."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for node in self.running():
                with contextlib.suppress(subprocess.SubprocessError):
                    listed = node.ctl("list_queues", "name", "leader", timeout=30)
                    for line in listed.stdout.splitlines():
                        name, _, leader = line.partition("\t")
                        found = [n for n in self.nodes if n.node == leader.strip()]
                        if name == queue and found:
                            return found[0]
            time.sleep(0.5)
        raise RuntimeError(f"no leader found for {queue}")

    def members(self, queue: str) -> list[str]:
        listed = self.running()[0].ctl("list_queues", "name", "members", timeout=30)
        for line in listed.stdout.splitlines():
            name, _, members = line.partition("\t")
            if name == queue:
                return [m for m in (n.node for n in self.nodes) if m in members]
        return []

    def close(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.close()
