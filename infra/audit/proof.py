"""What a third party needs to check the audit trail: hashes, checkpoints, bundles.

Self-contained on purpose (the standard library and ``cryptography`` only, no
store, no settings): the Information Regulator or a court's expert may copy this
one file and run ``python3 proof.py BUNDLE_DIR --public-key HEX`` (or
``privacyops audit verify-bundle``). The procedure it follows is written out in the
README, "Audit trail".

Hashes (SHA-256, lower-case hex):

* ``digest = SHA-256(canonical(content))``: ``content`` is a row's fields
  (``FIELDS``) plus ``"format": FORMAT`` and its ``seq``; ``canonical`` is JSON with
  sorted keys, separators ``,`` and ``:``, UTF-8, non-ASCII kept as is;
* ``row_hash = SHA-256(prev_hash + digest)`` over the two hex strings; the first row
  of a tenant has ``prev_hash = GENESIS`` (64 zeros).

A checkpoint signs ``canonical({"format": CHECKPOINT_FORMAT, "tenant_id", "seq",
"row_hash", "made_at"})`` with Ed25519; its ``key_id`` is the first 16 hex digits of
the SHA-256 of the raw 32-byte public key. A bundle's manifest is signed the same
way over ``canonical(manifest without "signature")``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
FORMAT = "privacyops-audit/1"
CHECKPOINT_FORMAT = "privacyops-audit-checkpoint/1"
BUNDLE_FORMAT = "privacyops-audit-bundle/1"
#: A row's own fields, in the order the store writes them.
FIELDS = (
    "tenant_id",
    "recorded_at",
    "actor",
    "action",
    "subject_ref",
    "message_id",
    "correlation_id",
    "attempt",
    "details",
)
ROWS_FILE = "rows.jsonl"
MANIFEST_FILE = "manifest.json"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> bytes:
    """JSON with sorted keys, no insignificant spaces, UTF-8: one byte string per value."""
    return _CANONICAL.encode(value).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(fields: Mapping[str, Any], seq: int) -> str:
    """A row's content digest: its ``FIELDS``, the format and its place in the chain."""
    return digest_of_values(tuple(fields[f] for f in FIELDS), seq)


def digest_of_values(values: Sequence[Any], seq: int) -> str:
    """``digest_of`` from the values in ``FIELDS`` order (the store's hot path: no dicts)."""
    (
        tenant_id,
        recorded_at,
        actor,
        action,
        subject_ref,
        message_id,
        correlation,
        attempt,
        details,
    ) = values
    content = {
        "action": action,
        "actor": actor,
        "attempt": attempt,
        "correlation_id": correlation,
        "details": details,
        "format": FORMAT,
        "message_id": message_id,
        "recorded_at": recorded_at,
        "seq": seq,
        "subject_ref": subject_ref,
        "tenant_id": tenant_id,
    }
    return hashlib.sha256(_CANONICAL.encode(content).encode()).hexdigest()


def link(prev_hash: str, digest: str) -> str:
    """A row's ``row_hash``: the previous row's hash and this row's digest, chained."""
    return sha256((prev_hash + digest).encode("ascii"))


def key_id(public_raw: bytes) -> str:
    return sha256(public_raw)[:16]


def signature_valid(public_raw: bytes, payload: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(bytes.fromhex(signature_hex), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Checkpoint:
    """A tenant's chain head at ``seq``, signed with the audit key ``key_id``."""

    tenant_id: str
    seq: int
    row_hash: str
    made_at: str
    key_id: str
    signature: str

    def payload(self) -> bytes:
        return checkpoint_payload(self.tenant_id, self.seq, self.row_hash, self.made_at)

    def valid(self, public_keys: Mapping[str, bytes]) -> bool:
        """Signed by a key among ``public_keys`` (key id -> raw public key)."""
        public = public_keys.get(self.key_id)
        return public is not None and signature_valid(public, self.payload(), self.signature)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_payload(tenant_id: str, seq: int, row_hash: str, made_at: str) -> bytes:
    return canonical(
        {
            "format": CHECKPOINT_FORMAT,
            "tenant_id": tenant_id,
            "seq": seq,
            "row_hash": row_hash,
            "made_at": made_at,
        }
    )


def unsigned(manifest: Mapping[str, Any]) -> bytes:
    """What a manifest's signature covers: the manifest without its ``signature``."""
    return canonical({k: v for k, v in manifest.items() if k != "signature"})


def verify_bundle(folder: Path, public_key_hex: str | None = None) -> list[str]:
    """Every problem found in the bundle at ``folder``; empty when it verifies.

    ``public_key_hex``: the operator's audit public key as published out of band
    (``privacyops audit public-key``); without it the key in the manifest is used,
    which proves integrity but not who signed.
    """
    try:
        raw_rows = (folder / ROWS_FILE).read_bytes()
        manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        return [f"bundle unreadable: {type(exc).__name__}"]
    try:
        return _check(manifest, raw_rows, public_key_hex)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"bundle malformed: {type(exc).__name__}: {exc}"]


def _check(manifest: dict[str, Any], raw_rows: bytes, public_key_hex: str | None) -> list[str]:
    problems: list[str] = []
    if manifest.get("format") != BUNDLE_FORMAT:
        return [f"not a {BUNDLE_FORMAT} manifest"]
    public = bytes.fromhex(public_key_hex or manifest["public_key"]["ed25519"])
    if public_key_hex and manifest["public_key"]["ed25519"] != public_key_hex.lower():
        problems.append("the manifest names another public key than the one given")
    if not signature_valid(public, unsigned(manifest), manifest["signature"]):
        problems.append("manifest signature does not verify")
    if sha256(raw_rows) != manifest["rows_sha256"]:
        problems.append(f"{ROWS_FILE} is not the file the manifest signed (sha256 differs)")
    rows = [json.loads(line) for line in raw_rows.decode().splitlines() if line.strip()]
    problems.extend(_check_segment(manifest, rows, {key_id(public): public}))
    return problems


def _check_segment(
    manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], keys: Mapping[str, bytes]
) -> list[str]:
    """Recompute the chain over the segment and match it to the signed checkpoint."""
    segment = manifest["segment"]
    checkpoint = Checkpoint(**manifest["checkpoint"])
    if checkpoint.tenant_id != manifest["tenant_id"]:
        return ["the checkpoint is another tenant's"]
    problems = [] if checkpoint.valid(keys) else ["checkpoint signature does not verify"]
    full = {int(row["seq"]): row for row in rows}
    first = int(segment["first_seq"])
    if len(full) != len(rows) or len(rows) != manifest["rows"]:
        problems.append("rows.jsonl repeats a row or does not hold the rows the manifest counts")
    if any(not first <= seq <= checkpoint.seq for seq in full):
        problems.append("a row lies outside the segment the checkpoint covers")
    others = {int(seq): str(d) for seq, d in segment["digests"].items()}
    prev = str(segment["prev_hash"])
    for seq in range(first, checkpoint.seq + 1):
        row = full.get(seq)
        if row is not None:
            if row["tenant_id"] != checkpoint.tenant_id:
                problems.append(f"row seq {seq} is another tenant's")
            if row["prev_hash"] != prev:
                problems.append(f"row seq {seq}: prev_hash does not link to the row before")
            row_hash = link(prev, digest_of(row, seq))
            if row_hash != row["row_hash"]:
                problems.append(f"row seq {seq} (id {row.get('id')}): content does not match")
        elif seq in others:
            row_hash = link(prev, others[seq])
        else:
            return [*problems, f"segment has no row or digest for seq {seq}"]
        prev = row_hash
    if prev != checkpoint.row_hash:
        problems.append(
            f"the segment does not end in the signed checkpoint's hash (seq {checkpoint.seq})"
        )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 proof.py BUNDLE_DIR [--public-key HEX]``: exit 0 verified, 1 not."""
    parser = argparse.ArgumentParser(description="Verify a privacyops audit bundle offline.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--public-key", help="the operator's Ed25519 audit key, hex")
    args = parser.parse_args(argv)
    problems = verify_bundle(args.bundle, args.public_key)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print("verified: every row is in the chain up to the signed checkpoint")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
