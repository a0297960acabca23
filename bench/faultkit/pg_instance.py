"""A PostgreSQL instance of the test's own (issue 14): never the machine's cluster.

``initdb`` into a temporary directory and ``pg_ctl`` on a spare port, its socket in that
directory, trust authentication on 127.0.0.1 only. PostgreSQL refuses to run as root,
so when the tests run as root the server runs as the ``postgres`` user (``runuser``).
Every call has a timeout; ``close`` stops it and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.faultkit.rabbit_node import spare_port


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no pg_ctl under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PgInstance:
    def __init__(self) -> None:
        self.bin = pg_bin()
        self.home = Path(tempfile.mkdtemp(prefix="privacyops-pg-"))
        self.data = self.home / "data"
        self.port = spare_port()
        self.user = "privacyops"
        self._as: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.home, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres?search_path=public"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._as, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.home,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr[-2000:]}")
        return done

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            timeout=120,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.home}'\nfsync = off\n"
            )

    def start(self) -> None:
        if not self.data.exists():
            self.init()
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.home / "log"),
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        self.running = True

    def stop(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "stop",
            timeout=90,
        )
        self.running = False

    def close(self) -> None:
        try:
            if self.running:
                with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                    self.stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
