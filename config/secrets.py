"""Secret files: created atomically with mode 0600 in a 0700 directory, refused when open.

Every key privacyops keeps on disk (publisher keyring, export, digest, notice and
store keys) goes through these two functions, so one rule holds for all of them:

* ``create_secret`` writes a new file under a temporary name opened with
  ``O_CREAT | O_EXCL`` and mode 0600, fsyncs it, then links it into place
  (``os.link`` fails if the name exists, so two processes creating the same key
  at once keep the first one and both read it); the directory is made 0700.
* ``read_secret`` refuses a file that its group or others may read or write
  (``chmod 600`` it), or that is a symlink, naming the path but never the content.

Secrets are never logged; errors say which file and why, not what is in it.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
import stat
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


class SecretFileError(ValueError):
    """A key file is missing, unsafe or unreadable (a usage error: exit code 2)."""


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents; every directory created here is 0700
    (``mkdir(parents=True)`` would give the parents the umask's mode)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        with contextlib.suppress(OSError):
            directory.chmod(DIR_MODE)
    return path


def read_secret(path: Path) -> bytes:
    """The file's bytes, stripped; refused when group or others have any access to it."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise SecretFileError(f"key file {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise SecretFileError(f"key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise SecretFileError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            "chmod 600 it"
        )
    data = path.read_bytes().strip()
    if not data:
        raise SecretFileError(f"key file {path} is empty")
    return data


def create_secret(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file ``path`` (0600), atomically; False if it already existed."""
    private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{_random.token_hex(6)}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def load_or_create(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The secret in ``path``, created with ``generate()`` first when the file is missing."""
    if not path.exists():
        create_secret(path, generate())
    return read_secret(path)


def write_private(path: Path, data: bytes) -> None:
    """A new file only its owner may read (O_EXCL: never overwrites), synced to disk."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        raise SecretFileError(f"{path} exists; write to a new file") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
