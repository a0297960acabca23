"""Issue 11, D (items 8-11) and the sealed notice context, on the real broker and store.

Keys: one file per purpose, 0600 in a 0700 directory, created atomically, refused when
others may read them, rotated with MultiFernet. Files: the store, its WAL, notices and
exports are owner-only. The store itself is SQLCipher-encrypted. Download codes: only a
digest is stored; the code travels sealed in the outbox row, never in ``notice.send`` or
a log, and ``dsr package`` takes it once, from standard input.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from cryptography.fernet import Fernet

from config.secrets import SecretFileError, create_secret, read_secret
from config.settings import Settings
from infra.keys import Keys, store_key
from infra.runtime.service import Service
from infra.store import open_store
from messages.errors import StoreRejected
from tests.security.support import EMAIL, SA_ID, access, plant_debtor, sql
from tests.support.helpers import BIN, migrated_store, wait_until
from workers.dsr import DsrWorker
from workers.notifier.handlers import NotifierWorker

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-main-b342242.db"

#: Encryption at rest is the SQLite store's (SQLCipher); PostgreSQL relies on its storage.
pytestmark = pytest.mark.stores("sqlite")


def body_of(path: Path) -> str:
    """The plain-text part of a written e-mail, decoded."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cli_env(settings: Settings, db: Path | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        "PRIVACYOPS_DB_PATH": str(db or settings.db_path),
        "PRIVACYOPS_KEY_DIR": str(settings.key_dir),
        "PRIVACYOPS_DB_ENCRYPTION": "sqlcipher",
        "PRIVACYOPS_EXPORT_DIR": str(settings.export_dir),
        "PRIVACYOPS_LOG_FORMAT": "json",
    }


def run(settings: Settings, *args: str, stdin: str | None = None, db: Path | None = None) -> Any:
    return subprocess.run(
        [str(BIN), *args],
        env=cli_env(settings, db),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- 8. keys -----------------------------------------------------------------------------


def test_key_files_are_private_and_refused_when_others_may_read_them(secured: Settings) -> None:
    keys = Keys.from_settings(secured)
    directory = secured.key_dir
    assert mode(directory) == 0o700
    for name in ("export.key", "digest.key", "notice.key", "audit.key"):
        assert mode(directory / name) == 0o600
    assert store_key(secured) is not None
    assert mode(directory / "store.key") == 0o600
    # separate keys: the digest key is not the export key (nor derived from it)
    export = (directory / "export.key").read_bytes()
    assert keys.digest.key not in export
    assert DsrWorker(secured).key == keys.digest.key

    (directory / "export.key").chmod(0o644)
    with pytest.raises(SecretFileError) as refused:
        Keys.from_settings(secured)
    assert "readable by others" in str(refused.value)
    assert export.decode().strip() not in str(refused.value)


def test_key_creation_is_atomic_when_processes_race(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "race.key"
    results: list[bool] = []

    def create(n: int) -> None:
        results.append(create_secret(path, f"key-{n}".encode()))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1  # one writer won; everyone reads its key
    assert read_secret(path).startswith(b"key-")
    assert [p.name for p in path.parent.iterdir()] == ["race.key"]  # no partial files


async def test_export_keys_rotate_with_multifernet(secured: Settings) -> None:
    old = Keys.from_settings(secured).export
    sealed = old.seal(b"package")
    key_file = secured.key_dir / "export.key"
    new_key = Fernet.generate_key()
    key_file.write_bytes(new_key + b"\n" + key_file.read_bytes())  # newest first
    rotated = Keys.from_settings(secured).export
    assert rotated.open(sealed) == b"package"  # the old key still opens old packages
    package = secured.export_dir / "acme" / "r-1.zip.enc"
    package.parent.mkdir(parents=True)
    package.write_text(sealed)
    done = await asyncio.to_thread(run, secured, "keys", "rotate-exports")
    assert done.returncode == 0, done.stderr
    assert Fernet(new_key).decrypt(package.read_bytes()) == b"package"
    assert mode(package) == 0o600


# -- 10. the store is encrypted ---------------------------------------------------------


async def test_the_store_is_encrypted_at_rest(secured: Settings) -> None:
    async with migrated_store(secured):
        pass
    plant_debtor(secured, "acme", "debtor-1")
    raw = b"".join(p.read_bytes() for p in secured.db_path.parent.glob("store.db*"))
    assert b"SQLite format 3" not in raw
    assert SA_ID.encode() not in raw
    assert EMAIL.encode() not in raw
    with pytest.raises(sqlite3.DatabaseError), sqlite3.connect(secured.db_path) as plain:
        plain.execute("SELECT count(*) FROM debtors").fetchone()
    wrong = open_store(secured.with_changes(db_key="A" * 43 + "="))
    with pytest.raises(StoreRejected, match="wrong key"):
        await wrong.open()
    assert sql(secured, "SELECT id_number FROM debtors") == [(SA_ID,)]


async def test_a_plain_store_is_encrypted_and_rekeyed_in_place(
    secured: Settings, tmp_path: Path
) -> None:
    db = tmp_path / "legacy.db"
    shutil.copy(FIXTURE, db)
    migrated = await asyncio.to_thread(
        subprocess.run,
        [str(BIN), "db", "migrate"],
        env={**cli_env(secured, db), "PRIVACYOPS_DB_ENCRYPTION": "none"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT count(*) FROM consent_history").fetchone()
    encrypted = await asyncio.to_thread(run, secured, "db", "encrypt", db=db)
    assert encrypted.returncode == 0, encrypted.stderr
    assert not db.read_bytes().startswith(b"SQLite format 3")
    assert mode(db) == 0o600
    status = await asyncio.to_thread(run, secured, "db", "status", db=db)
    assert status.returncode == 0, status.stderr + status.stdout
    on_disk = secured.with_changes(db_path=db)
    assert sql(on_disk, "SELECT count(*) FROM consent_history") == [before]

    new_key = tmp_path / "new-store.key"
    create_secret(new_key, (secured.key_dir / "store.key").read_bytes().swapcase())
    rekeyed = await asyncio.to_thread(
        run, secured, "db", "rekey", "--new-key-file", str(new_key), db=db
    )
    assert rekeyed.returncode == 0, rekeyed.stderr
    with pytest.raises(Exception, match=r"not a database|wrong key"):
        sql(on_disk, "SELECT 1")
    assert sql(on_disk.with_changes(db_key_file=new_key), "SELECT count(*) FROM consent_history")


# -- 9, 11 and the sealed context: an access request end to end --------------------------


@pytest.fixture
async def notices_seen(secured: Settings) -> AsyncIterator[list[bytes]]:
    """Every ``notice.send`` body on the internal exchange (a spy queue bound beside the
    notifier's), to show what travels in messages."""
    connection = await aio_pika.connect(secured.amqp_url.get_secret_value(), timeout=5)
    seen: list[bytes] = []
    async with connection:
        channel = await connection.channel()
        internal = await channel.declare_exchange(
            f"{secured.namespace}.internal", aio_pika.ExchangeType.DIRECT, durable=True
        )
        spy = await channel.declare_queue(exclusive=True, auto_delete=True)
        await spy.bind(internal, "notice.send")

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.append(message.body)
            await message.ack()

        await spy.consume(take)
        yield seen


async def test_a_download_code_is_stored_as_a_digest_and_sealed_until_sent(
    start_secured, secured: Settings, publisher_for, notices_seen: list[bytes], log_output
) -> None:
    async with migrated_store(secured):
        pass
    plant_debtor(secured, "acme", "debtor-1")
    service: Service = await start_secured(
        [DsrWorker(secured), NotifierWorker(secured)], outbox_poll_s=0.05
    )
    identity = await publisher_for("verifier")
    await identity.publish(access("r-code"))

    async def sent() -> bool:
        rows = sql(
            secured,
            "SELECT status FROM notification_outbox WHERE kind = 'dsr_package_ready'",
        )
        return rows == [("sent",)]

    await wait_until(sent)
    [(context, sealed)] = sql(
        secured,
        "SELECT context, sealed FROM notification_outbox WHERE kind = 'dsr_package_ready'",
    )
    assert sealed is None  # dropped once sent
    assert "token" not in json.loads(context)
    [(mail, text)] = [
        (p, body_of(p))
        for p in (secured.notify_dir / "email").glob("*.eml")
        if "one-time code:" in body_of(p)
    ]
    code = next(line.rsplit(" ", 1)[1] for line in text.splitlines() if "one-time code:" in line)
    [(digest,)] = sql(secured, "SELECT token_digest FROM dsr_packages")
    assert digest == hashlib.sha256(code.encode()).hexdigest()
    assert notices_seen
    assert all(code.encode() not in body and b"context" not in body for body in notices_seen)
    assert code not in log_output.getvalue()

    # 9. owner-only files: store, WAL, notices, exports, keys
    for path in [
        secured.db_path,
        *secured.db_path.parent.glob("store.db-*"),
        mail,
        *secured.export_dir.rglob("*.zip.enc"),
        *secured.key_dir.iterdir(),
    ]:
        assert mode(path) == 0o600, path
    for directory in [secured.notify_dir, mail.parent, secured.export_dir, secured.key_dir]:
        assert mode(directory) == 0o700, directory

    # 11. dsr package: code on stdin, 0600 O_EXCL output, once, audited
    out = secured.db_path.parent / "package.zip"
    taken = await asyncio.to_thread(
        run, secured, "dsr", "package", "acme", "--out", str(out), stdin=code + "\n"
    )
    assert taken.returncode == 0, taken.stderr
    assert mode(out) == 0o600
    assert "subject.json" in zipfile.ZipFile(io.BytesIO(out.read_bytes())).namelist()
    assert code not in taken.stdout + taken.stderr
    again = await asyncio.to_thread(
        run, secured, "dsr", "package", "acme", "--out", str(out) + ".2", stdin=code
    )
    assert again.returncode == 1
    assert "used already" in again.stderr
    exists = await asyncio.to_thread(
        run, secured, "dsr", "package", "acme", "--out", str(out), stdin=code
    )
    assert exists.returncode == 2
    in_argv = await asyncio.to_thread(run, secured, "dsr", "package", "acme", code, "--out", "x")
    assert in_argv.returncode == 2  # the code is never an argument

    async def audited() -> bool:
        rows = sql(
            secured, "SELECT actor, message_id FROM audit_log WHERE action = 'package_downloaded'"
        )
        return rows == [("operator:guest", "r-code")]

    await wait_until(audited)
    await asyncio.sleep(0.5)  # the broker-reported copy is absorbed, not written twice
    assert len(sql(secured, "SELECT 1 FROM audit_log WHERE action = 'package_downloaded'")) == 1
    assert service
