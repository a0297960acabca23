"""A RabbitMQ node of the test's own: never the machine's broker.

Started from the installed ``rabbitmq-server`` on spare ports (AMQP and Erlang
distribution), with its own node name, data and log directories, config file and Erlang
cookie. A plain AMQP listener by default; ``tls=True`` gives a TLS listener only
(certificates from a throwaway trustme CA, issue 11 B6/E16). Several nodes that share a
``cookie`` can be clustered (tests/support/rabbit_cluster.py).

Every ``rabbitmqctl`` call names the node (``-n``) and has a timeout; every wait is
bounded. ``stop_app``/``start_app`` stop and start the RabbitMQ application of this node,
``kill`` sends SIGKILL to its Erlang VM, ``start`` (again) brings a stopped or killed node
back on the same data, ``close`` stops it for good and removes its directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

BIN = Path("/usr/lib/rabbitmq/bin")
#: As deploy/rabbitmq.conf.
MAX_MESSAGE_SIZE = 262_144


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RabbitNode:
    def __init__(
        self,
        *,
        tls: bool = False,
        prefix: str = "privacyops-test",
        cookie: str | None = None,
        extra_config: str = "",
    ) -> None:
        self.tls = tls
        self.home = Path(tempfile.mkdtemp(prefix=f"{prefix}-node-"))
        self.node = f"{prefix}-{uuid.uuid4().hex[:8]}@localhost"
        self.port = spare_port()
        self.dist_port = spare_port()
        self.extra_config = extra_config
        self.pid: int | None = None
        self.running = False
        cookie_file = self.home / ".erlang.cookie"  # HOME is the node's: its own cookie
        cookie_file.write_text(cookie or uuid.uuid4().hex.upper())
        cookie_file.chmod(0o400)
        self.ca_file = self.home / "ca.pem"
        self._ca = None
        if tls:
            import trustme

            self._ca = trustme.CA()
            self._ca.cert_pem.write_to_path(str(self.ca_file))

    @property
    def url(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://guest:guest@localhost:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
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

    def _write_config(self) -> None:
        lines = [f"max_message_size = {MAX_MESSAGE_SIZE}"]
        if self._ca is not None:
            server = self._ca.issue_cert("localhost", "127.0.0.1")
            server.cert_chain_pems[0].write_to_path(str(self.home / "server.pem"))
            server.private_key_pem.write_to_path(str(self.home / "server.key"))
            lines += [
                "listeners.tcp = none",
                f"listeners.ssl.default = 127.0.0.1:{self.port}",
                f"ssl_options.cacertfile = {self.ca_file}",
                f"ssl_options.certfile = {self.home / 'server.pem'}",
                f"ssl_options.keyfile = {self.home / 'server.key'}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
                "ssl_options.versions.1 = tlsv1.3",
                "ssl_options.versions.2 = tlsv1.2",
            ]
        else:
            lines.append(f"listeners.tcp.default = 127.0.0.1:{self.port}")
        (self.home / "rabbitmq.conf").write_text("\n".join(lines) + "\n" + self.extra_config)
        (self.home / "advanced.config").write_text("[].\n")
        (self.home / "rabbitmq-env.conf").write_text("")
        (self.home / "enabled_plugins").write_text("[].\n")

    def start(self, within_s: float = 90, *, wait: bool = True) -> None:
        """Start the node (again, on the same data after ``stop`` or ``kill``)."""
        if not (self.home / "rabbitmq.conf").exists():
            self._write_config()
        subprocess.run(
            [str(BIN / "rabbitmq-server"), "-detached"],
            env=self._env(),
            cwd=self.home,
            capture_output=True,
            timeout=60,
            check=True,
        )
        self.running = True
        if wait:
            self.await_startup(within_s)

    def await_startup(self, within_s: float = 90) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            left = max(5.0, deadline - time.monotonic())
            try:
                done = self.ctl("await_startup", "--timeout", "30", timeout=min(40, left))
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0:
                self.pid = self._read_pid()
                return
            time.sleep(1)
        raise RuntimeError(f"the test node {self.node} did not start within {within_s} s")

    def _read_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.home / "node.pid").read_text().strip())
        with contextlib.suppress(subprocess.SubprocessError, ValueError):
            out = self.ctl("eval", "list_to_integer(os:getpid()).", timeout=20).stdout
            return int(out.strip())
        return None

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node>``: never the machine's node."""
        return subprocess.run(
            [str(BIN / "rabbitmqctl"), "-n", self.node, "-q", *args],
            env=self._env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _checked(self, *args: str, timeout: float = 60) -> str:
        done = self.ctl(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stderr}")
        return done.stdout

    def stop_app(self) -> None:
        self._checked("stop_app", timeout=60)

    def start_app(self, within_s: float = 90) -> None:
        self._checked("start_app", timeout=within_s)
        self.await_startup(within_s)

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM (no goodbye to clients or peers)."""
        pid = self.pid or self._read_pid()
        if pid is None:
            raise RuntimeError(f"no pid known for {self.node}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, within_s=15)
        self.running = False
        self.pid = None

    def _wait_gone(self, pid: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the node (its data stays: ``start`` brings it back); SIGKILL if it will not."""
        pid = self.pid or self._read_pid()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl("stop", timeout=60)
        if pid is not None:
            self._wait_gone(pid, within_s=20)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.running = False
        self.pid = None

    def close(self) -> None:
        """Stop the node for good and remove its directories."""
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
