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

from config.datamap import DataMap, Retention
from messages.errors import RuleViolation
from workers.dsr.gather import SubjectData
from workers.platform.keys import load_key as load_key  # callers name package.load_key


def document(
    data: SubjectData, datamap: DataMap, retention: Retention, request_id: str, portable: bool
) -> dict[str, Any]:
    """The JSON document: the data and, per table, what POPIA s23 / GDPR art 15 require.

    Per table: its description, the purposes, the categories of information, the
    source, the recipients and how long it is kept (the retention duties of its
    group); columns outside the data map; then the corrections requested but not
    made, restrictions, objections, the subject's request history and the
    security incidents that involved them.
    """
    tables: dict[str, Any] = {}
    for name, rows in data.tables.items():
        table = datamap.tables[name]
        tables[name] = {
            "description": table.description,
            "purposes": table.purposes,
            "categories": table.categories(),
            "source": table.source,
            "disclosed_to": table.disclosed_to,
            "retention": retention_period(retention, table.hold_group),
            "rows": rows,
        }
        if name in data.unclassified:
            tables[name]["unclassified_columns"] = data.unclassified[name]
    return {
        "request_id": request_id,
        "tenant_id": data.tenant_id,
        "subject_ref": data.subject_ref,
        "kind": "portability" if portable else "access",
        "tables": tables,
        "recipients": datamap.recipients(list(data.tables)),
        "corrections_requested_but_not_made": data.correction_notes,
        "restrictions": data.restrictions,
        "objections": data.objections,
        "your_requests": data.requests,
        "security_incidents": data.incidents,
        "your_rights": "You may ask for any of this information to be corrected or deleted "
        "(POPIA s24), object to its processing (POPIA s11(3)), and complain to the "
        "Information Regulator (POPIA s74).",
    }


def retention_period(retention: Retention, group: str) -> list[str]:
    """How long a retention group is kept: each duty that can hold it, in words."""
    found = []
    for hold in retention.holds:
        if group not in hold.applies_to:
            continue
        if hold.when == "account_open":
            found.append(f"while a debt is open ({hold.basis})")
        else:
            found.append(f"{hold.years} years ({hold.basis})")
    if group == "consent":
        found.append(f"opt-outs: {retention.opt_out_years} years after an erasure (NCR reg 58(4))")
    return found or ["until it is no longer needed for its purpose (POPIA s14(1))"]


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
