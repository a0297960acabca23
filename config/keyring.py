"""The publishers' keyring: who may sign which messages (README "Security model").

A JSON file (``PRIVACYOPS_SIGNING_KEYS_FILE``, default ``<key_dir>/signing-keys.json``,
mode 0600), one entry per publisher key::

    {"keys": [
      {"key_id": "portal-2026-03", "secret": "<random, 32+ characters>",
       "tenants": ["acme"], "types": ["dsr.requested", "consent.changed"],
       "may_assert_verification": false, "broker_users": ["acme-portal"],
       "not_after": "2026-09-30T00:00:00Z"}
    ]}

* ``key_id`` travels with every signature (``x-privacyops-key-id``); several keys
  are valid at once, so a publisher rotates by adding a new entry, switching to it,
  then removing the old one (or letting ``not_after`` pass).
* ``tenants`` and ``types`` are the scopes (``"*"`` for any; ``types`` entries may
  end in ``.*``); a message outside them is refused as ``unauthorized``.
* ``may_assert_verification``: only such keys may publish ``dsr.verified`` or a
  request with ``identity_verified: true`` (docs/rules.md "Identity"). From any other key the
  assertion is not honoured.
* ``broker_users``: when given, a message signed with this key must also have been
  published by one of these broker users (the AMQP ``user_id``, checked by the broker).
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from config.secrets import read_secret

KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PublisherKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str = Field(pattern=KEY_ID.pattern)
    secret: SecretStr
    tenants: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    may_assert_verification: bool = False
    broker_users: list[str] = Field(default_factory=list)
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _secret_long_enough(self) -> Self:
        if len(self.secret.get_secret_value()) < 32:
            raise ValueError(f"key {self.key_id}: secret must be at least 32 characters")
        return self

    def allows_tenant(self, tenant_id: str) -> bool:
        return "*" in self.tenants or tenant_id in self.tenants

    def allows_type(self, message_type: str) -> bool:
        return any(fnmatch.fnmatchcase(message_type, pattern) for pattern in self.types)

    def expired(self, now: datetime) -> bool:
        return self.not_after is not None and now >= self.not_after


class Keyring(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: list[PublisherKey] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique(self) -> Self:
        ids = [k.key_id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("key ids must be unique")
        return self

    def get(self, key_id: str) -> PublisherKey | None:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None


def load_keyring(path: Path) -> Keyring:
    """Read and validate the keyring (refused when others may read it)."""
    try:
        return Keyring.model_validate(json.loads(read_secret(path)))
    except json.JSONDecodeError:
        raise ValueError(f"keyring {path} is not valid JSON") from None
    except ValidationError as exc:  # never echo the input: it holds the secrets
        where = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False, include_context=False)
        )
        raise ValueError(f"keyring {path} is invalid: {where}") from None


def now_utc() -> datetime:
    return datetime.now(UTC)
