"""Named admin accounts and their sessions (``privacyops admin add``, the console's login).

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second
recommended profile); a hash made under older parameters is replaced at the next
login. A session is a random 256-bit token in an HttpOnly cookie; the store keeps
only its SHA-256 digest (a copied database opens no session), with a CSRF token
that every form of that session must carry.

An admin is a ``viewer`` (reads, masked) or an ``operator`` (also acts), for
every tenant or only the tenants listed: every page asks ``Admin.tenant_scope``
and puts it in its SQL.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from infra.console import tables
from infra.store import Store

ROLES = ("viewer", "operator")
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,62}$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_HASHER = PasswordHasher()
#: Verified against when the name is unknown, so an unknown name costs the same time.
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 12


@dataclass(frozen=True)
class Admin:
    """Who is logged in: a name for the audit, a role, and the tenants they may see."""

    name: str
    role: str
    tenants: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        """The audit actor of the admin's actions."""
        return f"admin:{self.name}"

    @property
    def may_act(self) -> bool:
        return self.role == "operator"

    def sees(self, tenant_id: str | None) -> bool:
        return not self.tenants or tenant_id in self.tenants

    def tenant_scope(self, wanted: str | None) -> tuple[str, ...] | None:
        """The tenants a query may read: ``wanted`` if allowed, else the admin's own (None:
        every tenant). A tenant outside the admin's list reads nothing (an empty tuple)."""
        if wanted:
            return (wanted,) if self.sees(wanted) else ()
        return self.tenants or None


@dataclass(frozen=True)
class LoggedIn:
    admin: Admin
    token: str
    csrf: str
    expires_at: datetime


def validate(name: str, password: str, role: str, tenants: Sequence[str]) -> None:
    if not _NAME.match(name):
        raise ValueError("admin name: lower-case letters, digits, '.', '_', '-' (2-63)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must be at least {MIN_PASSWORD} characters")
    for tenant in tenants:
        if not _TENANT.match(tenant):
            raise ValueError("tenant ids are lower-case letters, digits and '-'")


async def add(
    store: Store,
    name: str,
    password: str,
    role: str,
    tenants: Sequence[str],
    now: datetime,
    *,
    replace: bool = False,
) -> bool:
    """Create the account (or, with ``replace``, reset its password, role and tenants and
    end its sessions); True if it was created."""
    validate(name, password, role, tenants)
    hashed = _HASHER.hash(password)
    scope = json.dumps(sorted(set(tenants)))
    async with store.transaction() as tx:
        exists = await tx.fetchone("SELECT 1 FROM console_admins WHERE name = ?", (name,))
        if exists and not replace:
            raise ValueError(f"admin {name} exists; --replace resets it")
        if exists:
            await tx.execute(tables.ADMIN_UPDATE, (hashed, role, scope, name))
            await tx.execute(tables.SESSION_DELETE_ADMIN, (name,))
        else:
            await tx.execute(tables.ADMIN_INSERT, (name, hashed, role, scope, now.isoformat()))
    return not exists


async def disable(store: Store, name: str, now: datetime) -> bool:
    async with store.transaction() as tx:
        changed = await tx.execute(tables.ADMIN_DISABLE, (now.isoformat(), name))
        await tx.execute(tables.SESSION_DELETE_ADMIN, (name,))
    return changed == 1


async def listing(store: Store) -> list[dict[str, Any]]:
    async with store.transaction() as tx:
        rows = await tx.fetchall(tables.ADMIN_LIST)
    keys = ("name", "role", "tenants", "created_at", "disabled_at")
    found = [dict(zip(keys, row, strict=True)) for row in rows]
    for row in found:
        row["tenants"] = json.loads(str(row["tenants"]))
    return found


async def login(
    store: Store, name: str, password: str, now: datetime, lifetime: timedelta
) -> LoggedIn | None:
    """A new session if the password is right; None otherwise (same cost either way)."""
    async with store.transaction() as tx:
        row = await tx.fetchone(tables.ADMIN_FIND, (name,))
    stored = str(row[1]) if row else _DUMMY
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    admin = Admin(str(row[0]), str(row[2]), tuple(json.loads(row[3])))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + lifetime
    async with store.transaction() as tx:
        if _HASHER.check_needs_rehash(stored):
            await tx.execute(tables.ADMIN_REHASH, (_HASHER.hash(password), name))
        await tx.execute(tables.SESSIONS_EXPIRED, (now.isoformat(),))
        await tx.execute(
            tables.SESSION_INSERT,
            (digest(token), admin.name, csrf, now.isoformat(), expires.isoformat()),
        )
    return LoggedIn(admin, token, csrf, expires)


async def session(store: Store, token: str, now: datetime) -> LoggedIn | None:
    """The live session of this cookie token, or None (unknown, expired, admin disabled)."""
    async with store.transaction() as tx:
        row = await tx.fetchone(tables.SESSION_FIND, (digest(token),))
    if row is None:
        return None
    name, csrf, expires_at, role, scope = row
    expires = datetime.fromisoformat(str(expires_at))
    if expires <= now:
        return None
    return LoggedIn(
        Admin(str(name), str(role), tuple(json.loads(scope))), token, str(csrf), expires
    )


async def logout(store: Store, token: str) -> None:
    async with store.transaction() as tx:
        await tx.execute(tables.SESSION_DELETE, (digest(token),))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
