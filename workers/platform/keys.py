"""The key that encrypts export packages and keys the digests privacyops keeps.

One place loads it, so the DSR worker (packages, audit digests, suppression
entries) and the consent worker (checking those suppression entries) agree on
it: ``PRIVACYOPS_EXPORT_KEY``, else the key file (created 0600 on first use).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from cryptography.fernet import Fernet

from config.settings import Settings


def load_key(secret: str | None, key_file: Path) -> bytes:
    """The export key from settings, else from ``key_file`` (created 0600 on first use)."""
    if secret:
        return secret.encode()
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(Fernet.generate_key())
        key_file.chmod(0o600)
    return key_file.read_bytes().strip()


def digest_key(settings: Settings) -> bytes:
    """The key of the keyed digests, from the settings."""
    secret = settings.export_key.get_secret_value() if settings.export_key else None
    return load_key(secret, settings.export_key_file)


def keyed_digest(key: bytes, value: str) -> str:
    """HMAC-SHA256 of a normalised value: it proves or matches a value without keeping it."""
    normalised = "".join(value.lower().split())
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()
