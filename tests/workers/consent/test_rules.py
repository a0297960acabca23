"""The consent rules of docs/rules.md ("Direct-marketing consent"), without I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from messages.consent import ConsentStatus, is_marketing
from workers.consent.rules import Current, Outcome, contactable, decide
from workers.platform.optouts import still_dated

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
G, W = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN


def test_first_event_applies() -> None:
    assert decide(G, T0, None) is Outcome.APPLIED
    assert decide(W, T0, None) is Outcome.APPLIED


def test_newer_event_wins() -> None:
    assert decide(W, T0 + timedelta(seconds=1), Current(G, T0)) is Outcome.APPLIED
    assert decide(G, T0 + timedelta(microseconds=1), Current(W, T0)) is Outcome.APPLIED


def test_older_event_changes_nothing() -> None:
    assert decide(W, T0 - timedelta(days=1), Current(G, T0)) is Outcome.SUPERSEDED
    assert decide(G, T0 - timedelta(days=1), Current(W, T0)) is Outcome.SUPERSEDED


def test_withdrawal_wins_a_tie() -> None:
    assert decide(W, T0, Current(G, T0)) is Outcome.APPLIED
    assert decide(G, T0, Current(W, T0)) is Outcome.SUPERSEDED


def test_same_status_newer_time_is_a_reaffirmation() -> None:
    assert decide(G, T0 + timedelta(hours=1), Current(G, T0)) is Outcome.REAFFIRMED
    assert decide(G, T0, Current(G, T0)) is Outcome.SUPERSEDED


R = ConsentStatus.REFUSED


@pytest.mark.parametrize(
    ("status", "occurred", "current", "barrier", "outcome"),
    [
        (G, T0, None, T0 + timedelta(days=1), Outcome.BARRED),  # older than the barrier
        (G, T0, None, T0, Outcome.BARRED),  # a tie with the barrier: the opt-out wins
        (G, T0 + timedelta(days=2), None, T0 + timedelta(days=1), Outcome.APPLIED),  # newer
        (W, T0, None, T0 + timedelta(days=1), Outcome.APPLIED),  # withdrawals never barred
        (R, T0, Current(G, T0 - timedelta(days=1)), T0, Outcome.APPLIED),
    ],
)
def test_a_grant_not_newer_than_a_kept_opt_out_is_barred(
    status: ConsentStatus,
    occurred: datetime,
    current: Current | None,
    barrier: datetime,
    outcome: Outcome,
) -> None:
    assert decide(status, occurred, current, barrier) is outcome


def test_the_protective_status_wins_a_tie() -> None:
    assert decide(R, T0, Current(W, T0)) is Outcome.APPLIED
    assert decide(W, T0, Current(R, T0)) is Outcome.SUPERSEDED
    assert decide(G, T0, Current(R, T0)) is Outcome.SUPERSEDED


@pytest.mark.parametrize(
    ("current", "barrier", "expected"),
    [
        (Current(G, T0), None, True),
        (Current(G, T0), T0 - timedelta(seconds=1), True),
        (Current(G, T0), T0, False),
        (Current(G, T0), T0 + timedelta(days=1), False),
        (Current(W, T0), None, False),
        (Current(R, T0), None, False),
        (None, None, False),
    ],
)
def test_only_a_grant_newer_than_every_barrier_allows_contact(
    current: Current | None, barrier: datetime | None, expected: bool
) -> None:
    assert contactable(current, barrier) is expected


@pytest.mark.parametrize(
    ("purpose", "marketing"),
    [
        ("direct_marketing", True),
        ("partner_offers", True),  # unclassified purposes are protected as marketing
        ("service_messages", False),
        ("account_notices", False),
        ("payment_reminders", False),
    ],
)
def test_which_purposes_are_marketing(purpose: str, marketing: bool) -> None:
    assert is_marketing(purpose) is marketing


def test_a_kept_opt_out_never_ends_early_in_a_zone_behind_utc() -> None:
    """NCR reg 58(4): an opt-out kept until 1 March 2029 (3 years from a New York erasure on
    1 March 2026) still holds at 02:00 UTC on 1 March 2029, when it is 28 February there."""
    expires_on = date(2029, 3, 1)
    assert still_dated(datetime(2029, 3, 1, 2, 0, tzinfo=UTC)) < expires_on  # still holds
    assert still_dated(datetime(2029, 3, 1, 12, 0, tzinfo=UTC)) == expires_on  # over everywhere
