"""What every console page shares: the admin's tenant scope as SQL, and the tenants' zones."""

from __future__ import annotations

from aiohttp import web

from infra.console.web import current


def tenants_clause(
    request: web.Request, wanted: str | None, column: str = "tenant_id"
) -> tuple[str, tuple[str, ...]] | None:
    """``(sql, params)`` limiting a query to the tenants the admin may read (and the one
    asked for); None when nothing may be read (a tenant outside the admin's list)."""
    scope = current(request).admin.tenant_scope(wanted or None)
    if scope is None:
        return "1 = 1", ()
    if not scope:
        return None
    return f"{column} IN ({', '.join('?' for _ in scope)})", scope
