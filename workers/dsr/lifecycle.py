"""Request lifecycle and deadlines (GDPR art 12(3); PAIA s57-s58; DOMAIN.md section 1).

* Due one calendar month after receipt: 15 Jan -> 15 Feb; 31 Jan -> 28 (or 29) Feb.
* An extension must be decided before the due date, with reasons told to the
  subject: up to two further months (GDPR art 12(3)); for a POPIA access
  request, PAIA s57 allows one further period of 30 days.
* A POPIA access request not answered in time counts as refused (PAIA s58).
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from enum import StrEnum
from typing import Literal

from infra.errors import RuleViolation
from messages.dsr import Regime, RequestKind


class Status(StrEnum):
    RECEIVED = "received"
    AWAITING_VERIFICATION = "awaiting_verification"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    REFUSED = "refused"


FINAL = frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.REFUSED})

#: Rights that act on or disclose data: they run only for a verified identity
#: (DOMAIN.md 1 "verify identity first"; section 5: no destructive action unverified).
NEEDS_VERIFICATION = frozenset(
    {RequestKind.ACCESS, RequestKind.PORTABILITY, RequestKind.ERASURE, RequestKind.RECTIFICATION}
)
DUE_SOON = timedelta(days=7)
PAIA_EXTENSION = timedelta(days=30)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later, clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_on(received: date) -> date:
    """One calendar month from receipt."""
    return add_months(received, 1)


def extended_due_on(regime: Regime, kind: RequestKind, due: date, months: int, today: date) -> date:
    """The new due date, or RuleViolation when the extension comes too late or is too long."""
    if today >= due:
        raise RuleViolation("an extension must be decided before the due date")
    if regime is Regime.POPIA and kind is RequestKind.ACCESS:
        if months != 1:
            raise RuleViolation("PAIA s57 allows one further period of 30 days for access")
        return due + PAIA_EXTENSION
    return add_months(due, months)


def deadline_state(due: date, today: date) -> Literal["due_soon", "overdue"] | None:
    """'overdue', 'due_soon' (within 7 days) or None."""
    if today > due:
        return "overdue"
    if due - today <= DUE_SOON:
        return "due_soon"
    return None
