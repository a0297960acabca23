"""Incident rules without I/O: ENISA bands and scores, correlation, phases, the 72-hour clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from messages.security import (
    AlertCategory,
    Compromise,
    DataCategory,
    IncidentStatus,
    PersonalData,
    SecurityAlertPayload,
    Severity,
)
from workers.security import notices, rules

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FIELDS = ("source", "category", "target_system")


def alert(**overrides: Any) -> SecurityAlertPayload:
    values: dict[str, Any] = {
        "alert_id": "a-1",
        "source": "auth_service",
        "category": "brute_force",
        "detected_at": T0,
        "target": {"system": "debtor-portal", "account_ids": ["acc-1"]},
    }
    return SecurityAlertPayload.model_validate({**values, **overrides})


def absorb(before: rules.Incident | None, payload: SecurityAlertPayload, subjects: int = 0):
    empty = rules.open_incident("acme", "inc-0000000000000001", "fp", payload, T0)
    return rules.absorb(before, empty, payload, subjects, T0)


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0.0, Severity.LOW),
        (1.99, Severity.LOW),
        (2.0, Severity.MEDIUM),
        (2.99, Severity.MEDIUM),
        (3.0, Severity.HIGH),
        (3.99, Severity.HIGH),
        (4.0, Severity.VERY_HIGH),
        (6.5, Severity.VERY_HIGH),
    ],
)
def test_enisa_bands_at_their_edges(score: float, band: Severity) -> None:
    assert rules.band(score) is band


def test_financial_data_has_base_score_three() -> None:
    assert rules.dpc([DataCategory.FINANCIAL]) == 3
    assert rules.dpc([DataCategory.CONTACT, DataCategory.FINANCIAL]) == 3
    assert rules.dpc([DataCategory.SPECIAL, DataCategory.FINANCIAL]) == 4
    assert rules.dpc([]) == 1


@pytest.mark.parametrize(
    ("data", "personal", "subjects", "categories", "expected"),
    [
        # identified financial data, lost device (no malice, confidentiality 0.25, avail 0.25)
        ({DataCategory.FINANCIAL}, PersonalData.SUSPECTED, True, {AlertCategory.LOST_DEVICE}, 3.5),
        # contact data only, misdelivered to one known recipient: 1 x 0.75 + 0.25
        ({DataCategory.CONTACT}, PersonalData.CONFIRMED, False, {AlertCategory.MISDELIVERY}, 1.0),
        # unknown involvement, no categories: 1 x 0.25 + brute force 0.75
        (set(), PersonalData.UNKNOWN, False, {AlertCategory.BRUTE_FORCE}, 1.0),
        # exfiltration of identified credit data: 3 x 1 + 0.5 + 0.5
        (
            {DataCategory.CREDIT},
            PersonalData.CONFIRMED,
            True,
            {AlertCategory.DATA_EXFILTRATION},
            4.0,
        ),
        # ransomware on special information: 4 x 1 + 2.0
        ({DataCategory.SPECIAL}, PersonalData.SUSPECTED, True, {AlertCategory.RANSOMWARE}, 6.0),
        # behavioural data, subjects unknown, suspected: 2 x 0.5 + malware 1.25
        ({DataCategory.BEHAVIOURAL}, PersonalData.SUSPECTED, False, {AlertCategory.MALWARE}, 2.25),
    ],
)
def test_score_is_dpc_times_ei_plus_cb(
    data: set[DataCategory],
    personal: PersonalData,
    subjects: bool,
    categories: set[AlertCategory],
    expected: float,
) -> None:
    assert rules.score(frozenset(data), personal, subjects, categories) == expected


def test_fingerprint_always_holds_the_tenant() -> None:
    one = alert()
    assert rules.fingerprint("acme", one, FIELDS) != rules.fingerprint("bravo", one, FIELDS)
    other_id = alert(alert_id="a-2", description="different text")
    assert rules.fingerprint("acme", one, FIELDS) == rules.fingerprint("acme", other_id, FIELDS)
    other_target = alert(target={"system": "payments", "account_ids": []})
    assert rules.fingerprint("acme", one, FIELDS) != rules.fingerprint("acme", other_target, FIELDS)
    with_accounts = (*FIELDS, "target_accounts")
    other_account = alert(target={"system": "debtor-portal", "account_ids": ["acc-2"]})
    assert rules.fingerprint("acme", one, FIELDS) == rules.fingerprint(
        "acme", other_account, FIELDS
    )
    assert rules.fingerprint("acme", one, with_accounts) != rules.fingerprint(
        "acme", other_account, with_accounts
    )


def test_window_picks_the_open_incident_in_reach() -> None:
    opened = absorb(None, alert()).after
    window = timedelta(hours=1)
    assert rules.pick([opened], T0 + timedelta(minutes=59), window) == opened
    assert rules.pick([opened], T0 + timedelta(hours=1), window) == opened
    assert rules.pick([opened], T0 + timedelta(hours=1, seconds=1), window) is None
    closed = opened.__class__(**{**opened.__dict__, "status": IncidentStatus.CLOSED})
    assert rules.pick([closed], T0, window) is None


def test_joining_grows_count_and_keeps_the_highest_severity() -> None:
    first = absorb(None, alert(data_categories=["financial"], personal_data_involved="unknown"))
    assert first.opened
    assert first.after.compromise is None
    second = absorb(first.after, alert(alert_id="a-2"))
    assert not second.opened
    assert second.after.alert_count == 2
    assert second.after.score == first.after.score
    assert [c for c, _, _ in second.changes] == [rules.Change.ALERT_JOINED]
    assert not second.notable


def test_suspected_personal_data_is_an_alleged_compromise_with_a_72_hour_clock() -> None:
    detected = T0 - timedelta(hours=2)
    decision = absorb(None, alert(personal_data_involved="suspected", detected_at=detected), 3)
    incident = decision.after
    assert decision.compromise_began
    assert incident.compromise is Compromise.ALLEGED
    assert incident.status is IncidentStatus.COMPROMISE_ALLEGED
    assert incident.aware_at == detected
    assert incident.report_due_at == detected + timedelta(hours=72)
    assert incident.phase == 1
    confirmed = absorb(incident, alert(alert_id="a-2", personal_data_involved="confirmed"))
    assert confirmed.confirmed
    assert confirmed.new_phase
    assert confirmed.after.phase == 2
    assert confirmed.after.aware_at == detected  # the clock does not restart
    again = absorb(confirmed.after, alert(alert_id="a-3", personal_data_involved="suspected"))
    assert again.after.compromise is Compromise.CONFIRMED  # never downgraded
    assert not again.new_phase


def test_more_data_categories_after_notice_is_a_new_phase() -> None:
    told = absorb(None, alert(personal_data_involved="suspected", data_categories=["contact"]))
    more = absorb(told.after, alert(alert_id="a-2", data_categories=["contact", "financial"]))
    assert more.new_phase
    news = notices.news_for(told.after, more.after)
    assert news == ["More kinds of your information were involved: financial."]


def test_high_severity_escalates_once() -> None:
    high = absorb(None, alert(data_categories=["financial"], personal_data_involved="confirmed"), 1)
    assert high.after.severity in (Severity.HIGH, Severity.VERY_HIGH)
    assert high.escalate
    assert not absorb(high.after, alert(alert_id="a-2")).escalate
    low = absorb(None, alert(category="misdelivery", data_categories=["contact"]))
    assert low.after.severity is Severity.LOW
    assert not low.escalate
    assert low.after.status is IncidentStatus.OPEN


def test_a_contained_incident_that_recurs_is_investigated_again() -> None:
    assert (
        rules.derive_status(IncidentStatus.CONTAINED, None, Severity.LOW)
        is IncidentStatus.INVESTIGATING
    )


def test_admin_confirm_starts_notices_or_an_update_phase() -> None:
    plain = absorb(None, alert()).after
    confirmed = rules.confirm(plain, T0)
    assert (confirmed.phase, confirmed.compromise) == (1, Compromise.CONFIRMED)
    assert confirmed.aware_at == T0
    alleged = absorb(None, alert(personal_data_involved="suspected")).after
    assert rules.confirm(alleged, T0 + timedelta(hours=1)).phase == 2
    assert rules.confirm(confirmed, T0) == confirmed


def test_the_72_hour_flag() -> None:
    due = T0 + timedelta(hours=72)
    warn = timedelta(hours=12)
    assert rules.report_flag(due, None, T0 + timedelta(hours=59, minutes=59), warn) is None
    assert rules.report_flag(due, None, T0 + timedelta(hours=60), warn) is rules.ReportFlag.DUE_SOON
    assert rules.report_flag(due, None, due - timedelta(microseconds=1), warn) == "due_soon"
    assert rules.report_flag(due, None, due, warn) is rules.ReportFlag.OVERDUE
    assert rules.report_flag(due, due, due + timedelta(days=1), warn) is None
    assert rules.late(due, due + timedelta(seconds=1))
    assert not rules.late(due, due)


def test_every_notice_has_the_four_s22_5_parts() -> None:
    incident = absorb(
        None,
        alert(personal_data_involved="confirmed", data_categories=["identity", "financial"]),
        2,
    ).after
    context = notices.notice_context(incident)
    for part in ("consequences", "measures", "subject_actions", "unauthorised_party"):
        assert context[part], part
    assert any("locked" in m for m in context["measures"])
    assert context["unauthorised_party"] == notices.UNKNOWN_PARTY
    named = absorb(None, alert(personal_data_involved="confirmed", unauthorised_party="X")).after
    assert notices.notice_context(named)["unauthorised_party"] == "X"


def test_breach_types_for_the_regulator_report() -> None:
    assert rules.breach_type({AlertCategory.LOST_DEVICE}) == "loss"
    assert rules.breach_type({AlertCategory.MISDELIVERY}) == "unlawful_processing"
    assert rules.breach_type({AlertCategory.LOST_DEVICE, AlertCategory.DATA_EXFILTRATION}) == (
        "unlawful_access"
    )
    assert rules.breach_type({AlertCategory.DATA_DESTRUCTION}) == "unauthorised_destruction"
