"""A PostgreSQL instance a test starts and stops itself (never the machine's service).

``initdb`` into a temporary directory, ``pg_ctl`` on a spare port with its unix socket
in that directory; removed afterwards. PostgreSQL refuses to run as root, so as root
the binaries run as the ``postgres`` user (``runuser``), in a directory it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.helpers import free_port


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no pg_ctl under /usr/lib/postgresql/*/bin: install postgresql")
    return Path(found[-1]).parent


@dataclass
class OwnPostgres:
    base: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(_bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.base / "data"),
            "-o",
            options,
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "-t", "30", "stop")


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh instance (superuser ``root``, trust on loopback), running; removed after."""
    base = Path(tempfile.mkdtemp(prefix="privacyops-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    instance = OwnPostgres(base, free_port())
    try:
        instance._run(
            "initdb",
            "-D",
            str(base / "data"),
            "-U",
            "root",
            "-A",
            "trust",
            "--no-sync",
            "--no-instructions",
        )
        instance.start()
        yield instance
    finally:
        if (base / "data" / "postmaster.pid").exists():
            instance._run("pg_ctl", "-D", str(base / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
