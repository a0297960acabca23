"""Where a notice goes: the subject's contact points, looked up at send time.

The notice row holds only the subject's opaque reference (DOMAIN.md 5: no
personal data travels in messages or logs); the address is read from the
``contact_points`` table the moment the notice is sent, so a corrected
address (POPIA s24) is used and an erased one is not.

``contact_points`` is shared with the platform's data store (infra/platform.py
declares the same table with the same columns); whichever runs first creates it.
"""

from __future__ import annotations

from typing import Protocol

from infra.platform import SCHEMA as PLATFORM_SCHEMA
from infra.store import SqliteStore

#: contact_points belongs to the platform's data (infra/platform.py); the notifier only reads it.
SCHEMA = PLATFORM_SCHEMA

#: Notice channel -> contact_points.kind.
CONTACT_KIND = {"email": "email", "sms": "phone"}

LOOKUP = (
    "SELECT value FROM contact_points WHERE tenant_id = ? AND subject_ref = ? AND kind = ?"
    " ORDER BY is_primary DESC, rowid LIMIT 1"
)


class ContactDirectory(Protocol):
    """Resolves a subject's address for a channel; None when there is none."""

    async def contact(self, tenant_id: str, subject_ref: str, channel: str) -> str | None: ...


class SqliteContactDirectory:
    """The embedded default: the ``contact_points`` table of the store."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def contact(self, tenant_id: str, subject_ref: str, channel: str) -> str | None:
        kind = CONTACT_KIND.get(channel)
        if kind is None:
            return None
        async with self._store.transaction() as tx:
            row = await tx.fetchone(LOOKUP, (tenant_id, subject_ref, kind))
        return str(row[0]) if row else None
