"""Handing an access package to its subject: one code path for the download page and the CLI.

The download code works once (issue 11, D11): the package is claimed
(``downloaded_at``) by an ``UPDATE ... WHERE downloaded_at IS NULL`` in the
transaction that writes the audit row, so of two uses at once only one gets it.
Where the tenant reviews packages before release (``package_review`` in
``config/tenants.toml``), the code opens nothing until an admin approved the
package in the console; the code is not used up by asking early. The action is
reported on the broker (``admin.action``, confirmed) before anything is decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import uuid4

from config.tenants import TenantDirectory
from infra.console.tables import REVIEW_FIND
from infra.runtime.audit import report
from infra.runtime.session import Session
from infra.runtime.worker import Effects
from infra.store import Transaction
from messages.errors import RuleViolation
from workers.dsr import package

FIND = (
    "SELECT path, expires_at, request_id, subject_ref, downloaded_at"
    " FROM dsr_packages WHERE tenant_id = ? AND token_digest = ?"
)
TAKE = (
    "UPDATE dsr_packages SET downloaded_at = ? WHERE tenant_id = ?"
    " AND token_digest = ? AND downloaded_at IS NULL"
)


class AwaitingReview(RuleViolation):
    """The tenant reviews packages before release and this one is not approved yet."""


@dataclass(frozen=True)
class Handed:
    request_id: str
    zipped: bytes


def reviewed(directory: TenantDirectory, tenant_id: str) -> bool:
    """Whether the tenant holds its packages for an admin's review (``package_review``)."""
    profile = directory.profile(tenant_id)
    return bool(profile and profile.package_review)


async def approved(tx: Transaction, tenant_id: str, request_id: str) -> bool:
    row = await tx.fetchone(REVIEW_FIND, (tenant_id, request_id))
    return row is not None and row[0] == "approved"


async def claim(
    opened: Session, tenant_id: str, code: str, actor: str, now: datetime, *, reviewed: bool
) -> Handed:
    """The package of ``code`` for ``tenant_id``, taken for good; ``RuleViolation`` if the
    code is unknown, used or expired, ``AwaitingReview`` if it is held for review."""
    _, publisher = opened.require_broker()
    digest = package.token_digest(code)
    async with opened.store.transaction() as tx:
        row = await tx.fetchone(FIND, (tenant_id, digest))
        if row is None:
            raise RuleViolation("no package for this code")
        path, expires_at, request_id, subject_ref, downloaded_at = row
        held = reviewed and not await approved(tx, tenant_id, str(request_id))
    if downloaded_at is not None:
        raise RuleViolation("this download code was used already")
    if datetime.fromisoformat(expires_at) <= now:
        raise RuleViolation("the download code has expired")
    if held:
        raise AwaitingReview("the package is being reviewed before release; try again later")
    report_id = uuid4()
    effects = Effects.standalone("dsr", tenant_id, actor=actor, now=now)
    effects.message_id = request_id
    effects.correlation_id = str(report_id)
    effects.audit("package_downloaded", subject_ref, request_id=request_id)
    async with opened.store.transaction() as tx:
        if await tx.execute(TAKE, (now.isoformat(), tenant_id, digest)) != 1:
            raise RuleViolation("this download code was used already")
        tx.stage_all(effects.writes)
    await report(
        publisher,
        opened.names,
        tenant_id,
        "package_downloaded",
        subject_ref,
        request_id,
        report_id=report_id,
    )
    return Handed(str(request_id), package.unseal(Path(path), opened.keys.export))
