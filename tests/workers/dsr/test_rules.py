"""Deadlines, extensions and retention holds, without I/O (docs/rules.md "Deadlines",
"Erasure and retention holds")."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from config.datamap import Hold, load_datamap, load_retention
from messages.dsr import Regime, RequestKind
from messages.errors import RuleViolation
from workers.dsr.rules import (
    Account,
    account_holds,
    active_holds,
    add_months,
    deadline_state,
    due_locally,
    due_on,
    extended_due_on,
    local_date,
    subject_holds,
)
from workers.platform.seed import Seeder, sa_id_number


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2026, 1, 15), date(2026, 2, 15)),
        (date(2026, 1, 31), date(2026, 2, 28)),
        (date(2028, 1, 31), date(2028, 2, 29)),
        (date(2026, 3, 31), date(2026, 4, 30)),
        (date(2026, 12, 31), date(2027, 1, 31)),
        (date(2026, 2, 28), date(2026, 3, 28)),
    ],
)
def test_due_one_calendar_month_after_receipt(received: date, due: date) -> None:
    assert due_on(received, Regime.GDPR, RequestKind.ACCESS) == due
    assert due_on(received, Regime.POPIA, RequestKind.ERASURE) == due


SAST = ZoneInfo("Africa/Johannesburg")


@pytest.mark.parametrize(
    ("moment", "zone", "day"),
    [
        (datetime(2026, 2, 28, 22, 30, tzinfo=UTC), SAST, date(2026, 3, 1)),  # 00:30 SAST
        (datetime(2026, 2, 28, 21, 59, tzinfo=UTC), SAST, date(2026, 2, 28)),
        (datetime(2026, 2, 28, 23, 30, tzinfo=UTC), ZoneInfo("Europe/London"), date(2026, 2, 28)),
    ],
)
def test_dates_are_the_tenants_local_dates(moment: datetime, zone: ZoneInfo, day: date) -> None:
    assert local_date(moment, zone) == day


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2026, 1, 1), date(2026, 1, 31)),  # 30 days is earlier than a month (31 days)
        (date(2026, 2, 1), date(2026, 3, 1)),  # a month (28 days) is earlier than 30 days
        (date(2026, 4, 1), date(2026, 5, 1)),  # 30 days = a month
    ],
)
def test_popia_access_is_due_in_30_days_when_earlier_than_a_month(
    received: date, due: date
) -> None:
    assert due_on(received, Regime.POPIA, RequestKind.ACCESS) == due


@pytest.mark.parametrize(
    "kind", [k for k in RequestKind if k is not RequestKind.ACCESS], ids=lambda k: k.value
)
def test_popia_gives_no_extension_for_its_other_rights(kind: RequestKind) -> None:
    with pytest.raises(RuleViolation, match="no extension"):
        extended_due_on(Regime.POPIA, kind, date(2026, 2, 15), 1, date(2026, 2, 1))
    assert extended_due_on(Regime.GDPR, kind, date(2026, 2, 15), 2, date(2026, 2, 1)) == date(
        2026, 4, 15
    )


def test_add_months_across_years() -> None:
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)


def test_extension_of_up_to_two_months_before_the_due_date() -> None:
    due = date(2026, 2, 15)
    assert extended_due_on(Regime.GDPR, RequestKind.ERASURE, due, 2, date(2026, 2, 14)) == date(
        2026, 4, 15
    )


@pytest.mark.parametrize("decided", [date(2026, 2, 15), date(2026, 3, 1)])
def test_extension_on_or_after_the_due_date_is_refused(decided: date) -> None:
    with pytest.raises(RuleViolation, match="before the due date"):
        extended_due_on(Regime.GDPR, RequestKind.ACCESS, date(2026, 2, 15), 1, decided)


def test_paia_access_extension_is_thirty_days() -> None:
    due = date(2026, 2, 15)
    assert extended_due_on(Regime.POPIA, RequestKind.ACCESS, due, 1, date(2026, 2, 1)) == date(
        2026, 3, 17
    )
    with pytest.raises(RuleViolation, match="PAIA s57"):
        extended_due_on(Regime.POPIA, RequestKind.ACCESS, due, 2, date(2026, 2, 1))


def test_deadline_states() -> None:
    due = date(2026, 2, 15)
    assert deadline_state(due, date(2026, 2, 7)) is None
    assert deadline_state(due, date(2026, 2, 8)) == "due_soon"
    assert deadline_state(due, date(2026, 2, 15)) == "due_soon"
    assert deadline_state(due, date(2026, 2, 16)) == "overdue"


RETENTION = load_retention()
TODAY = date(2026, 11, 1)


def account(
    status: str,
    closed: date | None = None,
    paid: date | None = None,
    debt_type: str = "ordinary",
    account_id: str = "acc-1",
    judgment: date | None = None,
) -> Account:
    return Account(status, debt_type, date(2015, 1, 1), closed, paid, account_id, judgment)


@pytest.mark.parametrize("debt_type", ["credit_card", "store_card", "ordinary"])
def test_an_unlisted_debt_type_gets_the_three_year_prescription(debt_type: str) -> None:
    paid = date(2025, 11, 1)  # a year before TODAY
    holds = account_holds(
        RETENTION, "bravo", account("written_off", paid=paid, debt_type=debt_type), TODAY
    )
    assert holds["identity"].name == "prescription"
    assert holds["identity"].until == date(2028, 11, 1)


def test_a_judgment_debt_runs_30_years_from_the_judgment() -> None:
    judged = account(
        "written_off", paid=date(2015, 6, 1), debt_type="judgment", judgment=date(2016, 5, 5)
    )
    assert account_holds(RETENTION, "bravo", judged, TODAY)["identity"].until == date(2046, 5, 5)
    paid_later = account(
        "written_off", paid=date(2018, 2, 2), debt_type="judgment", judgment=date(2016, 5, 5)
    )
    assert account_holds(RETENTION, "bravo", paid_later, TODAY)["identity"].until == date(
        2048, 2, 2
    )


def test_holds_apply_per_record_and_the_identity_while_any_hold_is_active() -> None:
    open_debt = account("open", account_id="acc-open")
    prescribed = account("written_off", paid=date(2016, 1, 1), account_id="acc-old")
    per_account = {
        a.account_id: account_holds(RETENTION, "bravo", a, TODAY) for a in (open_debt, prescribed)
    }
    assert per_account["acc-old"] == {}  # its records may go although another debt is open
    assert per_account["acc-open"]["debt"].name == "open_debt"
    subject = subject_holds(per_account)
    assert subject["identity"].until is None
    assert subject["contact"].name == "open_debt"


def test_a_hold_counted_in_years_needs_a_default_period() -> None:
    with pytest.raises(ValueError, match="'years'"):
        Hold.model_validate(
            {
                "name": "x",
                "basis": "b",
                "applies_to": ["debt"],
                "from": ["opened_on"],
                "years_by_debt_type": {"ordinary": 3},
            }
        )


def test_an_open_account_holds_without_end() -> None:
    holds = active_holds(RETENTION, "bravo", [account("open")], TODAY)
    assert holds["identity"].name == "open_debt"
    assert holds["identity"].until is None
    assert set(holds) >= {"identity", "contact", "debt", "financial", "conduct"}
    assert "consent" not in holds


def test_closed_account_runs_the_retention_periods() -> None:
    closed = date(2023, 6, 30)
    holds = active_holds(RETENTION, "bravo", [account("closed", closed)], TODAY)
    assert "debt" not in holds  # reg 55: 3 years, ran out on 2026-06-30
    assert holds["financial"].name == "tax_s29"
    assert holds["financial"].until == date(2028, 6, 30)
    # bravo is not a FICA accountable institution: the identity stays only for the tax records
    assert holds["identity"].name == "tax_s29"
    assert holds["identity"].basis.startswith("identity kept for records held")
    assert "contact" not in holds


def test_fica_applies_to_accountable_institutions_only() -> None:
    closed = date(2023, 6, 30)
    assert active_holds(RETENTION, "acme", [account("closed", closed)], TODAY)[
        "identity"
    ].until == date(2028, 6, 30)


def test_prescription_by_debt_type() -> None:
    paid = date(2022, 1, 10)
    ordinary = active_holds(RETENTION, "bravo", [account("written_off", paid=paid)], TODAY)
    assert ordinary["identity"].name == "tax_s29"  # prescribed on 2025-01-10; tax keeps it
    assert ordinary["financial"].name == "tax_s29"
    bill = active_holds(
        RETENTION, "bravo", [account("written_off", paid=paid, debt_type="bill_of_exchange")], TODAY
    )
    assert bill["identity"].until == date(2028, 1, 10)


def test_everything_expired_means_no_hold() -> None:
    assert active_holds(RETENTION, "acme", [account("closed", date(2015, 3, 1))], TODAY) == {}


def test_the_latest_hold_binds() -> None:
    accounts = [account("closed", date(2024, 1, 1)), account("open")]
    assert active_holds(RETENTION, "bravo", accounts, TODAY)["debt"].until is None


def test_data_map_covers_every_seeded_table() -> None:
    seeder = Seeder("acme", 1)
    for index in range(50):
        seeder.debtor(index)
    datamap = load_datamap()
    assert set(seeder.rows) <= set(datamap.tables)


def test_seeded_id_numbers_pass_the_check_digit() -> None:
    from random import Random

    from messages.dsr import luhn_ok

    rng = Random(4)
    numbers = [sa_id_number(rng, date(1980, 5, 17)) for _ in range(100)]
    assert all(luhn_ok(n) and n.startswith("800517") and len(n) == 13 for n in numbers)


def test_seeded_account_ids_never_contain_the_subject_ref() -> None:
    seeder = Seeder("acme", 1)
    for index in range(200):
        seeder.debtor(index)
    for account_id, _tenant, subject_ref, *_ in seeder.rows["accounts"]:
        assert subject_ref not in str(account_id)
        assert not str(account_id).startswith(f"{subject_ref}-")


def test_a_hold_ends_on_the_tenants_date_not_utcs() -> None:
    """docs/rules.md "Deadlines": "today" is the tenant's date. At 03:00 UTC on 2 March it is
    still 1 March in New York: a hold until 2 March has not ended there, and has in SA."""
    now = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert not due_locally("2026-03-02", now, ZoneInfo("America/New_York"))
    assert due_locally("2026-03-02", now, ZoneInfo("Africa/Johannesburg"))
    later = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # already 3 March in Auckland
    assert due_locally("2026-03-03", later, ZoneInfo("Pacific/Auckland"))
    assert not due_locally("2026-03-03", later, ZoneInfo("Africa/Johannesburg"))
    assert due_locally(None, now, ZoneInfo("America/New_York"))  # until the debts close
