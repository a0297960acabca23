"""The file channel: the embedded default, so a demo needs no provider.

E-mails are written as ``<dir>/email/<notice_id>.eml`` (RFC 5322, readable by
any mail client), SMS as ``<dir>/sms/<notice_id>.txt``, letters as
``<dir>/post/<notice_id>.txt`` (the print run: the tenant's mail room or print
provider prints and posts each file; there is no other post transport). The notice_id is the
file name, so writing the same notice again replaces the file: idempotent by
construction. Writes go to a temporary file renamed into place, so a crash
never leaves half a notice. The files hold addresses and bodies: the directory
is personal data and belongs with the store (same permissions, same retention):
files are created 0600 and the directories 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from config.secrets import FILE_MODE, private_dir
from infra.transports.base import (
    Email,
    Letter,
    Sms,
    check_email,
    check_postal,
    compose,
    normalise_phone,
)
from messages.errors import ProviderUnavailable


class FileEmailSender:
    transport = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "email"

    async def send(self, email: Email) -> str:
        check_email(email.to)
        path = self.directory / f"{email.notice_id}.eml"
        await asyncio.to_thread(_write, path, compose(email).as_bytes())
        return email.message_id

    async def close(self) -> None:
        """Nothing held."""


class FileSmsSender:
    transport = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "sms"

    async def send(self, sms: Sms) -> str:
        to = normalise_phone(sms.to)
        text = f"From: {sms.sender_id}\nTo: {to}\nReference: {sms.notice_id}\n\n{sms.text}\n"
        await asyncio.to_thread(_write, self.directory / f"{sms.notice_id}.txt", text.encode())
        return sms.notice_id

    async def close(self) -> None:
        """Nothing held."""


class FileLetterSender:
    """Letters for the print run, one file each, named by the notice_id (idempotent)."""

    transport = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "post"

    async def send(self, letter: Letter) -> str:
        to = check_postal(letter.to)
        text = (
            f"{letter.sender_name}\n{letter.sender_address}\n\n{to}\n\n"
            f"Reference: {letter.notice_id}\n\n{letter.subject}\n\n{letter.text}"
        )
        path = self.directory / f"{letter.notice_id}.txt"
        await asyncio.to_thread(_write, path, text.encode())
        return letter.notice_id

    async def close(self) -> None:
        """Nothing held."""


def _write(path: Path, data: bytes) -> None:
    """Owner-only (0600 in 0700 directories): a notice holds an address and its text."""
    try:
        private_dir(path.parent.parent)
        private_dir(path.parent)
        partial = path.with_suffix(path.suffix + ".part")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()  # left by a crash; recreated below with the right mode
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    except OSError as exc:
        raise ProviderUnavailable(f"notice directory not writable: {type(exc).__name__}") from exc
