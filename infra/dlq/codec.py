"""What a dead letter says, and how it is shown, filtered and written to a file.

Pure logic, no I/O: ``infra/dlq.py`` moves messages, this module reads them.

Two kinds of dead letter reach ``ns.<worker>.dlq``:

* **runtime**: the runtime republished a failed message with its own headers
  (``x-privacyops-error-type``, ``-error``, ``-attempts``...; see
  ``infra/runtime/consumer.py``);
* **broker**: the broker dead-lettered a message that passed the worker queue's
  delivery limit (it kept crashing the process). It carries ``x-death`` (newest
  entry first) and ``x-first-death-*`` instead. Since RabbitMQ 4.0 the broker
  ignores an ``x-death`` header that a client republishes, so the first time
  privacyops moves such a message it copies those facts into its own headers
  (``normalise``): reading a broker dead letter never loses why it died.

Personal data (docs/rules.md "What is never allowed"): ``mask_body`` masks by key and by shape but
keeps the structure, so an admin sees which field is wrong without seeing whose
data it is. Only ``dlq show --reveal`` prints a body whole, and that is audited.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from infra.headers import (
    H_ATTEMPTS,
    H_ERROR,
    H_ERROR_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ROUTING_KEY,
    H_WORKER,
)
from infra.redaction import MASK, SENSITIVE_KEYS, redact, redact_text

H_REPLAYS = "x-privacyops-replays"
H_REPLAYED_BY = "x-privacyops-replayed-by"
H_REPLAYED_AT = "x-privacyops-replayed-at"
#: ``broker`` when the facts in our headers were copied from ``x-death``.
H_DEAD_LETTERED_BY = "x-privacyops-dead-lettered-by"
#: The runtime's error before the broker dead-lettered the message (delivery limit).
H_PREVIOUS_ERROR_TYPE = "x-privacyops-previous-error-type"


#: AMQP properties carried over when a message is moved. ``expiration`` would make a
#: dead letter expire in its queue and ``user_id`` must match the publishing user, so
#: neither is carried; the delivery mode is always persistent.
CARRIED_PROPERTIES = (
    "message_id",
    "correlation_id",
    "content_type",
    "content_encoding",
    "timestamp",
    "type",
    "app_id",
    "reply_to",
    "priority",
)

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
UNKNOWN_TENANT = "unknown"

Source = Literal["runtime", "broker"]


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, with the facts an admin filters on."""

    worker: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    id: str
    type: str | None
    tenant: str | None
    subject_ref: str | None
    error_type: str
    error: str
    attempts: int
    first_failure: datetime | None
    dead_at: datetime | None
    routing_key: str
    replays: int
    source: Source
    raw_headers: dict[str, Any] = field(repr=False, default_factory=dict)
    #: The AMQP ``message_id`` property, shown beside ``id`` (aiormq fills it with a
    #: random id when a publisher leaves it unset, so it is not the envelope's).
    amqp_message_id: str | None = None

    @property
    def audit_tenant(self) -> str:
        """The tenant for audit rows: the message's, if it is a well-formed tenant id."""
        return self.tenant if self.tenant and _TENANT.match(self.tenant) else UNKNOWN_TENANT

    def age(self, now: datetime) -> timedelta | None:
        return now - self.dead_at if self.dead_at else None

    def summary(self, now: datetime) -> dict[str, Any]:
        """The listing row: no body, and type and tenant masked in case they are not ids."""
        age = self.age(now)
        return {
            "queue": self.worker,
            "id": self.id,
            "amqp_message_id": self.amqp_message_id,
            "type": redact_text(self.type) if self.type else None,
            "tenant": redact_text(self.tenant) if self.tenant else None,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "replays": self.replays,
            "source": self.source,
            "dead_at": self.dead_at.isoformat() if self.dead_at else None,
            "age_s": round(age.total_seconds()) if age is not None else None,
        }


def parse(
    worker: str, body: bytes, headers: Mapping[str, Any], properties: Mapping[str, Any]
) -> DeadLetter:
    """Read a dead letter as delivered (headers normalised, see the module docstring).

    Its ``id`` is the envelope's ``message_id`` wherever the body gives one (the id
    upstream knows, and the one the inbox, history and audit rows carry); else the AMQP
    property; else a hash of the body."""
    raw = dict(headers)
    norm = normalise(worker, raw)
    envelope = _peek(body)
    amqp_id = _text(properties.get("message_id"))
    envelope_id = _text(envelope.get("message_id"))
    if envelope_id is not None and not _ID.match(envelope_id):
        envelope_id = None
    return DeadLetter(
        worker=worker,
        body=body,
        headers=norm,
        properties={k: v for k, v in properties.items() if v is not None},
        amqp_message_id=amqp_id,
        id=envelope_id or amqp_id or body_id(body),
        type=_text(envelope.get("type")),
        tenant=_text(envelope.get("tenant_id")),
        subject_ref=_subject(envelope),
        error_type=str(norm.get(H_ERROR_TYPE) or "unknown"),
        error=redact_text(str(norm.get(H_ERROR) or "")),
        attempts=_int(norm.get(H_ATTEMPTS)),
        first_failure=_time(norm.get(H_FIRST_FAILURE)),
        dead_at=_time(norm.get(H_LAST_FAILURE)) or _time(properties.get("timestamp")),
        routing_key=str(norm.get(H_ROUTING_KEY) or ""),
        replays=_int(norm.get(H_REPLAYS)),
        source="broker" if norm.get(H_DEAD_LETTERED_BY) == "broker" else "runtime",
        raw_headers=raw,
    )


def normalise(worker: str, headers: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a broker dead-lettering (newest ``x-death`` entry) into our own headers.

    A message the runtime dead-lettered has no ``x-death`` (the runtime strips it);
    one that came back from a retry tier has an ``expired`` entry, which is history,
    not the cause, so only a newest entry from the worker queue counts.
    """
    out = dict(headers)
    death = _newest_death(headers)
    if death is None or out.get(H_DEAD_LETTERED_BY) == "broker":
        return out
    reason = str(death.get("reason") or headers.get("x-first-death-reason") or "dead_lettered")
    when = _time(death.get("time")) or datetime.now(UTC)
    keys = death.get("routing-keys") or []
    if out.get(H_ERROR_TYPE):
        out[H_PREVIOUS_ERROR_TYPE] = out[H_ERROR_TYPE]
    out.update(
        {
            H_DEAD_LETTERED_BY: "broker",
            H_ERROR_TYPE: reason,
            H_ERROR: f"dead-lettered by the broker ({reason}) from queue {death.get('queue')}",
            H_FIRST_FAILURE: out.get(H_FIRST_FAILURE) or when.isoformat(),
            H_LAST_FAILURE: when.isoformat(),
            H_WORKER: out.get(H_WORKER) or worker,
            H_ROUTING_KEY: out.get(H_ROUTING_KEY) or (_text(keys[0]) if keys else "") or "",
        }
    )
    return out


def _newest_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
        return None
    newest: Mapping[str, Any] = deaths[0]
    if str(newest.get("reason")) == "expired" and ".retry." in str(newest.get("queue")):
        return None
    return newest


def body_id(body: bytes) -> str:
    """A stable id for a body without a message id (undecodable input)."""
    return "body-" + hashlib.sha256(body).hexdigest()[:16]


#: What an envelope's message_id may look like to be used as a dead letter's id.
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,80}$")
#: Deeper JSON than this is not an envelope: read as text (masked), never walked
#: recursively (a RecursionError would make the whole queue unmanageable).
MAX_DEPTH = 64


def loads(body: bytes) -> Any:
    """JSON, or ``ValueError`` (not JSON, not UTF-8, or nested deeper than ``MAX_DEPTH``)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not readable JSON ({type(exc).__name__})") from None
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH}")
    return value


def depth(value: Any) -> int:
    """How deep containers nest in a parsed JSON value, without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level + 1)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in item)
    return deepest


_ENVELOPE_FIELD = re.compile(r'"(message_id|type|tenant_id)"\s*:\s*"([A-Za-z0-9._:-]{1,80})"')


def _peek(body: bytes) -> dict[str, Any]:
    """The envelope's fields; from a body that is not JSON (truncated, say), best effort."""
    try:
        value = loads(body)
    except ValueError:
        text = body[:4096].decode("utf-8", "replace")
        found: dict[str, Any] = {}
        for match in _ENVELOPE_FIELD.finditer(text):
            found.setdefault(match.group(1), match.group(2))
        return found
    return value if isinstance(value, dict) else {}


def _subject(envelope: Mapping[str, Any]) -> str | None:
    payload = envelope.get("payload")
    ref = payload.get("subject_ref") if isinstance(payload, Mapping) else None
    return ref if isinstance(ref, str) and _SUBJECT.match(ref) and ref == redact_text(ref) else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- selection ----------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/datetime (UTC when naive)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    parsed = _time(text.strip())
    if parsed is None:
        raise ValueError(f"--since: not a duration (30m, 2h, 7d) or ISO date: {text!r}")
    return parsed


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; an empty selection matches every one."""

    ids: frozenset[str] = frozenset()
    type: str | None = None
    error: str | None = None
    tenant: str | None = None
    since: datetime | None = None

    @property
    def everything(self) -> bool:
        return not (self.ids or self.type or self.error or self.tenant or self.since)

    def matches(self, letter: DeadLetter) -> bool:
        checks = (
            not self.ids or letter.id in self.ids or letter.amqp_message_id in self.ids,
            self.type is None or fnmatch.fnmatchcase(letter.type or "", self.type),
            self.error is None or _error_matches(self.error, letter),
            self.tenant is None or letter.tenant == self.tenant,
            self.since is None or (letter.dead_at is not None and letter.dead_at >= self.since),
        )
        return all(checks)


def _error_matches(wanted: str, letter: DeadLetter) -> bool:
    """An error type (``invalid``) exactly, or words found in the (masked) error text."""
    return wanted == letter.error_type or wanted.lower() in letter.error.lower()


# -- masking ------------------------------------------------------------------------------

#: Masked whole in logs, but for an admin they are the envelope's containers: walk into
#: them and mask inside, so the structure stays visible.
_CONTAINERS = frozenset({"payload", "body"})
_JSON_PAIR = re.compile(r'"([^"\\]{1,64})"\s*:\s*"((?:[^"\\]|\\.)*)"')


def mask_value(value: Any, key: str | None = None, inside: bool = False) -> Any:
    """Mask personal data by key and by shape, keeping keys, nesting and types visible."""
    name = key.lower() if key else None
    if name in SENSITIVE_KEYS and name not in _CONTAINERS:
        inside = True
    if isinstance(value, Mapping):
        return {redact_text(str(k)): mask_value(v, str(k), inside) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, None, inside) for v in value]
    if inside and value is not None:
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def mask_body(body: bytes) -> Any:
    """A body for display: parsed JSON masked by ``mask_value``, else masked text."""
    try:
        return mask_value(loads(body))
    except ValueError:
        return mask_text(body.decode("utf-8", "replace"))


def mask_text(text: str) -> str:
    """Text that is not valid JSON (truncated, say): mask sensitive pairs, then shapes."""

    def pair(match: re.Match[str]) -> str:
        if match.group(1).lower() in SENSITIVE_KEYS - _CONTAINERS:
            return f'"{match.group(1)}": "{MASK}"'
        return match.group(0)

    return redact_text(_JSON_PAIR.sub(pair, text))


def mask_headers(headers: Mapping[str, Any]) -> Any:
    return redact(to_jsonable(dict(headers)))


def reveal_body(body: bytes) -> Any:
    try:
        return loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


# -- JSON Lines ---------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """AMQP field values as JSON; non-JSON types tagged so ``from_jsonable`` restores them."""
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            [(tag, inner)] = value.items()
            if tag == "$bytes":
                return base64.b64decode(inner)
            if tag == "$datetime":
                return datetime.fromisoformat(inner)
            if tag == "$decimal":
                return Decimal(inner)
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def to_record(letter: DeadLetter) -> str:
    """One JSON line: queue (worker), body in base64, headers and properties."""
    record = {
        "worker": letter.worker,
        "id": letter.id,
        "body": base64.b64encode(letter.body).decode(),
        "headers": to_jsonable(letter.headers),
        "properties": to_jsonable(letter.properties),
    }
    return json.dumps(record, sort_keys=True)


@dataclass(frozen=True)
class Record:
    """A dead letter read back from an export file."""

    worker: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]


def from_record(line: str, number: int) -> Record:
    """Parse one export line; ``ValueError`` names the line, never its content."""
    try:
        data = json.loads(line)
        record = Record(
            worker=str(data["worker"]),
            body=base64.b64decode(data["body"], validate=True),
            headers=dict(from_jsonable(data.get("headers") or {})),
            properties=dict(from_jsonable(data.get("properties") or {})),
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(
            f"line {number}: not an exported dead letter ({type(exc).__name__})"
        ) from None
    unknown = set(record.properties) - set(CARRIED_PROPERTIES)
    if unknown:
        raise ValueError(f"line {number}: unknown properties {sorted(unknown)}")
    return record
