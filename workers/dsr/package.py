"""The export package: one JSON document plus one CSV per table, zipped, encrypted at rest.

Encryption is Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``),
key from configuration. The subject gets a random download token that expires;
only its SHA-256 digest is stored, and the token never reaches a log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from config.datamap import DataMap
from messages.errors import RuleViolation
from workers.dsr.gather import SubjectData
from workers.platform.keys import load_key as load_key  # callers name package.load_key


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
    zipped: bytes, key: bytes, directory: Path, name: str, now: datetime, ttl: timedelta
) -> Issued:
    """Encrypt the package to ``directory/name.zip.enc``; return the path and a fresh token."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.zip.enc"
    path.write_bytes(Fernet(key).encrypt(zipped))
    path.chmod(0o600)
    return Issued(path, secrets.token_urlsafe(32), now + ttl)


def unseal(path: Path, key: bytes) -> bytes:
    try:
        return Fernet(key).decrypt(path.read_bytes())
    except InvalidToken as exc:
        raise RuleViolation("package cannot be decrypted with the configured key") from exc
