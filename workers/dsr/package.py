"""The export package: one JSON document plus one CSV per table, zipped, encrypted at rest.

Encryption is Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``)
under the export key (``infra.keys``: MultiFernet, so the key rotates). The
package file is written 0600 in a 0700 directory. The subject gets a random
download code (256 bits) that expires and works once: only its SHA-256 digest
is stored in ``dsr_packages``; the code itself travels to the subject in the
notice's *sealed* context (encrypted in the outbox row, cleared once sent) and
never reaches a message, a log or the audit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from config.datamap import DataMap
from config.secrets import FILE_MODE, private_dir
from infra.keys import Sealer
from workers.dsr.gather import SubjectData


def document(
    data: SubjectData, datamap: DataMap, request_id: str, portable: bool
) -> dict[str, Any]:
    """The JSON document: the data, its recipients, and the subject's further rights."""
    return {
        "request_id": request_id,
        "tenant_id": data.tenant_id,
        "subject_ref": data.subject_ref,
        "kind": "portability" if portable else "access",
        "tables": {
            name: {
                "description": datamap.tables[name].description,
                "disclosed_to": datamap.tables[name].disclosed_to,
                "rows": rows,
            }
            for name, rows in data.tables.items()
        },
        "recipients": datamap.recipients(list(data.tables)),
        "corrections_requested_but_not_made": data.correction_notes,
        "restrictions": data.restrictions,
        "objections": data.objections,
        "your_rights": "You may ask for any of this information to be corrected or deleted "
        "(POPIA s24), and complain to the Information Regulator.",
    }


def build_zip(doc: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("subject.json", json.dumps(doc, indent=2, default=str, sort_keys=True))
        for name, table in doc["tables"].items():
            archive.writestr(f"{name}.csv", _csv(table["rows"]))
        if doc["corrections_requested_but_not_made"]:
            archive.writestr(
                "corrections_not_made.csv", _csv(doc["corrections_requested_but_not_made"])
            )
    return buffer.getvalue()


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    path: Path
    token: str
    expires_at: datetime


def seal(
    zipped: bytes, key: Sealer, directory: Path, name: str, now: datetime, ttl: timedelta
) -> Issued:
    """Encrypt the package to ``directory/name.zip.enc`` (0600, directory 0700); return
    the path and a fresh download code."""
    private_dir(directory)
    path = directory / f"{name}.zip.enc"
    partial = directory / f".{name}.{secrets.token_hex(6)}.part"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.seal(zipped).encode("ascii"))
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    return Issued(path, secrets.token_urlsafe(32), now + ttl)


def unseal(path: Path, key: Sealer) -> bytes:
    """The package's zip; ``RuleViolation`` if no configured export key opens it."""
    return key.open(path.read_bytes())
