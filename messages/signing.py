"""Message signatures: HMAC-SHA256 of the exact body bytes.

A signed message carries ``x-privacyops-signature: sha256=<hex>``. Publishers
sign with ``sign``; workers check with ``verify``. The comparison is on bytes
and in constant time; a header that is not ASCII text simply does not match.
"""

from __future__ import annotations

import hashlib
import hmac

#: The AMQP header that carries the signature.
SIGNATURE_HEADER = "x-privacyops-signature"


def sign(body: bytes, key: str) -> str:
    """The signature of ``body`` under ``key``, as carried in the header."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, given: object, key: str) -> bool:
    """Whether ``given`` (the header's value, any type) is the signature of ``body``."""
    if isinstance(given, str):
        try:
            given = given.encode("ascii")
        except UnicodeEncodeError:
            return False
    if not isinstance(given, bytes):
        return False
    return hmac.compare_digest(given, sign(body, key).encode("ascii"))
