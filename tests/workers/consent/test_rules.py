"""The ordering rule of DOMAIN.md section 4, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from messages.consent import ConsentStatus
from workers.consent.rules import Current, Outcome, decide

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
