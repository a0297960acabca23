"""Masking of personal data in text that leaves the store: logs, errors, headers.

Two layers (docs/rules.md "What is never allowed": no personal information in logs, exception
messages or dead-letter headers):

* by key: a field whose name says it holds personal data (``email``,
  ``payload``, ``evidence``...) is replaced whole;
* by shape: e-mail addresses (a pattern), phone numbers (libphonenumber's
  ``PhoneNumberMatcher``, region ZA: local and international forms with any
  grouping), South African ID numbers (python-stdnum ``za.idnr``: date and check
  digit, with or without spaces or a label glued on) and any other standalone
  run of 9+ digits are masked wherever they appear inside any other string;
* keys are masked too, and any other object is stringified then masked.

The shapes err on the side of masking: an opaque subject reference never
matches them (``messages.envelope.SubjectRef`` forbids all-digit references).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import phonenumbers
from pydantic import BaseModel
from stdnum.za import idnr as za_idnr

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

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
#: 13 digits, possibly grouped by spaces or hyphens ("800101 5009 087"), possibly glued to
#: a label ("ID8001015009087"): masked when python-stdnum says it is a valid SA ID number.
_ID_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12}(?!\d)")
#: Any other run of 9+ digits standing on its own (an ID number with a bad check digit, an
#: account number); not one inside an identifier such as a hex incident id.
_LONG_DIGITS = re.compile(r"(?<![A-Za-z0-9])\d{9,}(?![A-Za-z0-9])")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: Fewer digits than this cannot be a phone or ID number: skip the matchers (fast path).
_MIN_DIGITS = 9


def _mask_ids(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        return MASK if za_idnr.is_valid(match.group(0)) else match.group(0)

    return _ID_CANDIDATE.sub(mask, text)


def _mask_phones(text: str) -> str:
    """Every number libphonenumber finds, read as South African unless it says otherwise
    (``(082) 123 4567``, ``082 123 45 67``, ``+44 20 7946 0958``)."""
    spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, "ZA")]
    for start, end in reversed(spans):
        text = text[:start] + MASK + text[end:]
    return text


def redact_text(text: str) -> str:
    """Mask every personal-data shape inside ``text`` (a bare UUID is left as it is)."""
    if _UUID.match(text):
        return text
    text = _EMAIL.sub(MASK, text)
    if sum(c.isdigit() for c in text) < _MIN_DIGITS:
        return text
    text = _mask_phones(_mask_ids(text))
    return _LONG_DIGITS.sub(MASK, text)


def redact(value: Any, key: str | None = None) -> Any:
    """Return ``value`` with personal data masked, recursing into containers.

    Keys are checked (a sensitive name masks the whole value) and masked themselves (a
    mapping keyed by e-mail address). Anything that is not a plain value or a container
    is stringified first and then masked: a pydantic model is dumped to a mapping (so its
    field names count), any other object becomes its ``str``, never its raw repr.
    """
    if key is not None and key.lower() in SENSITIVE_KEYS:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, BaseModel):
        return redact(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {redact_text(str(k)): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return redact_text(str(value))


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """The error's text, masked and cut to ``limit`` characters, for headers and logs."""
    text = redact_text(str(exc)) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
