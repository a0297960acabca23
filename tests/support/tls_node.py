"""A RabbitMQ node of the test's own, with a TLS listener only (issue 11, B6 and E16).

Started from the installed ``rabbitmq-server`` on spare ports, with its own node name,
data and log directories, config file (TLS listener, no plain listener, the
``max_message_size`` of deploy/rabbitmq.conf) and Erlang cookie: the machine's
broker service is never touched. Certificates come from trustme (a throwaway CA).
``stop`` stops the node and removes its directories.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import trustme

BIN = Path("/usr/lib/rabbitmq/bin")
MAX_MESSAGE_SIZE = 262_144


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TlsNode:
    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="privacyops-tls-node-"))
        self.node = f"privacyops-tls-{uuid.uuid4().hex[:8]}@localhost"
        self.port = spare_port()
        self.dist_port = spare_port()
        self.ca = trustme.CA()
        self.ca_file = self.home / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.url = f"amqps://guest:guest@localhost:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_PID_FILE": str(self.home / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.home / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, within_s: float = 90) -> None:
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        server.cert_chain_pems[0].write_to_path(str(self.home / "server.pem"))
        server.private_key_pem.write_to_path(str(self.home / "server.key"))
        (self.home / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {self.ca_file}\n"
            f"ssl_options.certfile = {self.home / 'server.pem'}\n"
            f"ssl_options.keyfile = {self.home / 'server.key'}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            "ssl_options.versions.1 = tlsv1.3\n"
            "ssl_options.versions.2 = tlsv1.2\n"
            f"max_message_size = {MAX_MESSAGE_SIZE}\n"
        )
        (self.home / "advanced.config").write_text("[].\n")
        (self.home / "rabbitmq-env.conf").write_text("")
        (self.home / "enabled_plugins").write_text("[].\n")
        subprocess.run(
            [str(BIN / "rabbitmq-server"), "-detached"],
            env=self._env(),
            cwd=self.home,
            capture_output=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.ctl("await_startup", timeout=30).returncode == 0:
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"the TLS test node did not start within {within_s} s")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "rabbitmqctl"), "-n", self.node, "-q", *args],
            env=self._env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        try:
            self.ctl("stop", timeout=60)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
