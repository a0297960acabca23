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

from config.datamap import DataMap, Retention
from config.secrets import FILE_MODE, private_dir
from infra.keys import Sealer
from workers.dsr.gather import SubjectData


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
