"""The DSR rules as pure functions: lifecycle, deadlines and retention holds.

Lifecycle and deadlines (GDPR art 12(3); PAIA s56-s58; docs/rules.md "Deadlines"):

* Dates are the tenant's local dates (Africa/Johannesburg unless configured): a
  request received at 00:30 SAST on 1 March was received on 1 March.
* Due one calendar month after receipt: 15 Jan -> 15 Feb; 31 Jan -> 28 (or 29)
  Feb. A POPIA access request is a PAIA request: due in 30 days when that is
  earlier (PAIA s56).
* An extension must be decided before the due date, judged by the worker's own
  clock, with reasons told to the subject: up to two further months for a GDPR
  request (GDPR art 12(3)); one further 30 days for a POPIA access request (PAIA
  s57); none for POPIA's other rights.
* A POPIA access request not answered in time counts as refused (PAIA s58).

Retention holds (docs/rules.md "Erasure and retention holds"): holds apply per
record. Each account (with its payments and the notes about it) has its own
binding hold per retention group; data about the subject as a whole is held
while any account's hold covers its group, and the identity while any hold at
all is active. An open account holds its groups with no end date; the other
duties run a number of years from the latest of the dates they name on each
account (a debt type not listed gets the default period: 3 years for
prescription; a judgment debt runs 30 years from the judgment). The latest
expiry binds.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Literal

from config.datamap import Hold, Retention, add_years
from messages.dsr import Regime, RequestKind
from messages.errors import RuleViolation


class Status(StrEnum):
    RECEIVED = "received"
    AWAITING_VERIFICATION = "awaiting_verification"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    REFUSED = "refused"


FINAL = frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.REFUSED})

#: Rights that act on or disclose data: they run only for a verified identity
#: (docs/rules.md "Identity"; "What is never allowed": no destructive action unverified).
NEEDS_VERIFICATION = frozenset(
    {RequestKind.ACCESS, RequestKind.PORTABILITY, RequestKind.ERASURE, RequestKind.RECTIFICATION}
)
#: Rights whose steps read every data source and build one package (issue 13).
READING = frozenset({RequestKind.ACCESS, RequestKind.PORTABILITY})
DUE_SOON = timedelta(days=7)
#: PAIA s56 (answer) and s57 (one extension): 30 days each.
PAIA_PERIOD = timedelta(days=30)
PAIA_EXTENSION = PAIA_PERIOD


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later, clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def local_date(moment: datetime, zone: tzinfo) -> date:
    """The date a moment falls on in the tenant's zone (receipt dates, "today")."""
    return moment.astimezone(zone).date()


# The furthest ahead of UTC any zone's date runs (UTC+14): a query for what is due "today"
# anywhere asks up to this moment, then each row is judged on its tenant's own date.
LATEST_ZONE_AHEAD = timedelta(hours=14)


def due_locally(run_after: str | None, now: datetime, zone: tzinfo) -> bool:
    """Whether a deferred erasure held until ``run_after`` (an ISO date; None: until the
    open debts close) may run again today, "today" being the tenant's date, not UTC's: a
    hold must not end early for a tenant behind UTC."""
    return run_after is None or date.fromisoformat(run_after) <= local_date(now, zone)


def is_paia(regime: Regime, kind: RequestKind) -> bool:
    """A POPIA access request is a PAIA request for one's own records (POPIA s23(3))."""
    return regime is Regime.POPIA and kind is RequestKind.ACCESS


def due_on(received: date, regime: Regime, kind: RequestKind) -> date:
    """One calendar month from receipt; a PAIA request 30 days when that is earlier (s56)."""
    month = add_months(received, 1)
    return min(month, received + PAIA_PERIOD) if is_paia(regime, kind) else month


def extended_due_on(regime: Regime, kind: RequestKind, due: date, months: int, today: date) -> date:
    """The new due date, or RuleViolation when the extension is late, too long or not allowed.

    ``today`` is the worker's own date when it processes the extension, never a date
    the sender chose.
    """
    if today >= due:
        raise RuleViolation("an extension must be decided before the due date")
    if is_paia(regime, kind):
        if months != 1:
            raise RuleViolation("PAIA s57 allows one further period of 30 days for access")
        return due + PAIA_EXTENSION
    if regime is Regime.POPIA:
        raise RuleViolation("POPIA allows no extension for this right; only access (PAIA s57)")
    return add_months(due, months)


def deadline_state(due: date, today: date) -> Literal["due_soon", "overdue"] | None:
    """'overdue', 'due_soon' (within 7 days) or None."""
    if today > due:
        return "overdue"
    if due - today <= DUE_SOON:
        return "due_soon"
    return None


# -- retention holds (docs/rules.md "Erasure and retention holds") -----------------------
@dataclass(frozen=True)
class Account:
    status: str
    debt_type: str
    opened_on: date
    closed_on: date | None
    last_payment_on: date | None
    account_id: str = ""
    judgment_on: date | None = None

    def anchor(self, columns: list[str]) -> date | None:
        """The latest of the named dates present: a later one (a payment acknowledging
        the debt, a judgment) starts the period afresh, so the latest is the one that binds.
        """
        found = [getattr(self, column, None) for column in columns]
        return max((d for d in found if isinstance(d, date)), default=None)


@dataclass(frozen=True)
class ActiveHold:
    group: str
    name: str
    basis: str
    until: date | None  # None: while the account stays open


def _expiry(hold: Hold, account: Account) -> tuple[bool, date | None]:
    """(applies, until) of one hold for one account."""
    if hold.when == "account_open":
        return account.status == "open", None
    if account.status not in hold.statuses:
        return False, None
    years = hold.period_years(account.debt_type)
    anchor = account.anchor(hold.anchors(account.debt_type))
    if years is None or anchor is None:
        return False, None
    return True, add_years(anchor, years)


def _later(a: ActiveHold | None, b: ActiveHold) -> ActiveHold:
    if a is None or a.until is None:
        return a or b
    if b.until is None or b.until > a.until:
        return b
    return a


def account_holds(
    retention: Retention, tenant_id: str, account: Account, today: date
) -> dict[str, ActiveHold]:
    """The binding hold per retention group for one account's records (per record)."""
    binding: dict[str, ActiveHold] = {}
    accountable = tenant_id in retention.accountable_institutions
    for hold in retention.holds:
        if hold.accountable_institutions_only and not accountable:
            continue
        applies, until = _expiry(hold, account)
        if not applies or (until is not None and until <= today):
            continue
        for group in hold.applies_to:
            binding[group] = _later(
                binding.get(group), ActiveHold(group, hold.name, hold.basis, until)
            )
    return binding


#: The retention group of the subject's identity: kept while any record of theirs is held.
IDENTITY = "identity"


def subject_holds(per_account: dict[str, dict[str, ActiveHold]]) -> dict[str, ActiveHold]:
    """The binding hold per group for data about the subject as a whole (not one account).

    A group is held while a hold on any account covers it; the identity is held while
    any hold at all is active (a record kept as evidence must stay attributable).
    """
    binding: dict[str, ActiveHold] = {}
    for holds in per_account.values():
        for group, hold in holds.items():
            binding[group] = _later(binding.get(group), hold)
    for hold in list(binding.values()):
        if hold.group != IDENTITY:
            kept = ActiveHold(
                IDENTITY, hold.name, f"identity kept for records held: {hold.basis}", hold.until
            )
            current = binding.get(IDENTITY)
            binding[IDENTITY] = kept if current is None else _later(current, kept)
    return binding


def active_holds(
    retention: Retention, tenant_id: str, accounts: list[Account], today: date
) -> dict[str, ActiveHold]:
    """The binding hold per retention group over all the subject's accounts."""
    per_account = {
        account.account_id or str(n): account_holds(retention, tenant_id, account, today)
        for n, account in enumerate(accounts)
    }
    return subject_holds(per_account)
