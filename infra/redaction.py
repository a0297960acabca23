"""Masking of personal data in text that leaves the store: logs, errors, headers.

Two layers (docs/rules.md "What is never allowed": no personal information in logs, exception
messages or dead-letter headers):

* by key: a field whose name says it holds personal data (``email``,
  ``payload``, ``evidence``...) is replaced whole;
* by shape: e-mail addresses, phone numbers (South African and international),
  13-digit South African ID numbers and other long digit runs are masked
  wherever they appear inside any other string.

The shapes err on the side of masking: an opaque subject reference never
matches them (``messages.envelope.SubjectRef`` forbids all-digit references).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "[redacted]"

#: Field names whose values are personal data by definition.
SENSITIVE_KEYS = frozenset(
    {
        "address",
        "body",
        "date_of_birth",
        "email",
        "evidence",
        "first_name",
        "full_name",
        "id_number",
        "ip_address",
        "last_name",
        "name",
        "payload",
        "phone",
        "surname",
        "wording",
    }
)

_PATTERNS = (
    # e-mail addresses
    re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"),
    # international numbers such as +27 82 123 4567, +44-20-7946-0958
    re.compile(r"\+\d[\d\s\-()]{7,18}\d"),
    # local South African numbers such as 082 123 4567 or 0821234567
    re.compile(r"\b0\d{2}[\s\-]?\d{3}[\s\-]?\d{4}\b"),
    # South African ID numbers (13 digits) and any other run of 9+ digits standing on its
    # own (not inside an identifier such as a hex incident id: "inc-a59fb10260944152")
    re.compile(r"(?<![A-Za-z0-9])\d{9,}(?![A-Za-z0-9])"),
)


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def redact_text(text: str) -> str:
    """Mask every personal-data shape inside ``text`` (a bare UUID is left as it is)."""
    if _UUID.match(text):
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """Return ``value`` with personal data masked, recursing into containers."""
    if key is not None and key.lower() in SENSITIVE_KEYS:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """The error's text, masked and cut to ``limit`` characters, for headers and logs."""
    text = redact_text(str(exc)) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
