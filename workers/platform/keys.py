"""The keyed digests privacyops keeps in place of personal data.

Suppression entries, erased references and correction digests are HMAC-SHA256 of
a normalised value under the digest key (``infra.keys``: ``PRIVACYOPS_DIGEST_KEY`` or
``<key_dir>/digest.key``, apart from the export and notice keys). One place derives
it, so the DSR worker (which writes the digests) and the consent worker (which
checks them) agree on it.
"""

from __future__ import annotations

import hashlib
import hmac

from config.settings import Settings
from infra.keys import Keys


def digest_key(settings: Settings, keys: Keys | None = None) -> bytes:
    """The key the digests are written with (the first of the digest keys)."""
    return (keys or Keys.from_settings(settings)).digest.key


def keyed_digest(key: bytes, value: str) -> str:
    """HMAC-SHA256 of a normalised value: it proves or matches a value without keeping it."""
    normalised = "".join(value.lower().split())
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()
