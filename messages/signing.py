"""Message signatures: HMAC-SHA256 over a canonical string, under a named publisher key.

A signed message carries three headers:

* ``x-privacyops-key-id``: which publisher key signed it (the workers' keyring,
  ``config/keyring.py``, says what that key may send);
* ``x-privacyops-signed-at``: when, in whole seconds since the epoch (UTC);
* ``x-privacyops-signature``: ``v2=<hex HMAC-SHA256>`` of the canonical string::

      privacyops-v2 \\n <key_id> \\n <routing_key> \\n <signed_at> \\n <hex SHA-256 of the body>

The routing key is covered, so a body signed for ``consent.changed`` cannot be
replayed as another type, and the time is covered, so a captured message is
refused once it is older than the replay window (``replay_window_s``).
Verification compares bytes in constant time; a header that is not ASCII text,
not a string, or not of the form above simply does not match: it is
``signature_invalid`` for that message alone, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

#: The AMQP headers that carry a signature.
SIGNATURE_HEADER = "x-privacyops-signature"
KEY_ID_HEADER = "x-privacyops-key-id"
SIGNED_AT_HEADER = "x-privacyops-signed-at"
SIGNING_HEADERS = (SIGNATURE_HEADER, KEY_ID_HEADER, SIGNED_AT_HEADER)
VERSION = "v2"


def canonical(key_id: str, routing_key: str, signed_at: int, body: bytes) -> bytes:
    """The exact bytes the signature is computed over."""
    parts = ("privacyops-v2", key_id, routing_key, str(signed_at), hashlib.sha256(body).hexdigest())
    return "\n".join(parts).encode("utf-8")


def sign(body: bytes, routing_key: str, key_id: str, secret: str, signed_at: int) -> str:
    """The signature header's value."""
    mac = hmac.new(secret.encode(), canonical(key_id, routing_key, signed_at, body), "sha256")
    return f"{VERSION}={mac.hexdigest()}"


def headers(
    body: bytes, routing_key: str, key_id: str, secret: str, signed_at: int
) -> dict[str, Any]:
    """All three signing headers for one publish."""
    return {
        KEY_ID_HEADER: key_id,
        SIGNED_AT_HEADER: signed_at,
        SIGNATURE_HEADER: sign(body, routing_key, key_id, secret, signed_at),
    }


def text_header(value: object) -> str | None:
    """A header value as ASCII text, or None when it is anything else (bytes that are not
    ASCII, numbers, tables): malformed input never raises."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not value.isascii():
        return None
    return value


def verify(
    body: bytes, routing_key: str, key_id: str, signed_at: int, given: object, secret: str
) -> bool:
    """Whether ``given`` (the header's value, any type) is the signature of this message."""
    if isinstance(given, str):
        try:
            given = given.encode("ascii")
        except UnicodeEncodeError:
            return False
    if not isinstance(given, bytes):
        return False
    expected = sign(body, routing_key, key_id, secret, signed_at).encode("ascii")
    return hmac.compare_digest(given, expected)
