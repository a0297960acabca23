"""Which retention duties hold a subject's data back from erasure (DOMAIN.md section 2).

Pure logic: given the subject's accounts, the retention rules and today, the
binding hold per retention group of the data map. An open account holds its
groups with no end date; the other duties run a number of years from a date
of each account. The latest expiry binds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from config.datamap import Hold, Retention, add_years


@dataclass(frozen=True)
class Account:
    status: str
    debt_type: str
    opened_on: date
    closed_on: date | None
    last_payment_on: date | None

    def anchor(self, columns: list[str]) -> date | None:
        for column in columns:
            value = getattr(self, column, None)
            if isinstance(value, date):
                return value
        return None


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
    anchor = account.anchor(hold.from_)
    if years is None or anchor is None:
        return False, None
    return True, add_years(anchor, years)


def _later(a: ActiveHold | None, b: ActiveHold) -> ActiveHold:
    if a is None or a.until is None:
        return a or b
    if b.until is None or b.until > a.until:
        return b
    return a


def active_holds(
    retention: Retention, tenant_id: str, accounts: list[Account], today: date
) -> dict[str, ActiveHold]:
    """The binding hold per retention group; a group absent from the result may be erased."""
    binding: dict[str, ActiveHold] = {}
    accountable = tenant_id in retention.accountable_institutions
    for hold in retention.holds:
        if hold.accountable_institutions_only and not accountable:
            continue
        for account in accounts:
            applies, until = _expiry(hold, account)
            if not applies or (until is not None and until <= today):
                continue
            for group in hold.applies_to:
                candidate = ActiveHold(group, hold.name, hold.basis, until)
                binding[group] = _later(binding.get(group), candidate)
    return binding
