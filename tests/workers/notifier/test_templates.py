"""Notice templates: every kind renders for e-mail and SMS with what the law requires."""

from __future__ import annotations

from typing import Any

import pytest

from config.tenants import DEFAULT_PATH, load
from messages.errors import InvalidMessage
from messages.notices import NoticeKind
from workers.notifier.templates import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SMS_MAX_SEGMENTS,
    Renderer,
    gsm7,
    segments,
    septets,
)

DIRECTORY = load(DEFAULT_PATH)
TENANT = DIRECTORY.tenants["acme"]
REGULATOR = DIRECTORY.regulator
LONG = "a very long explanation that a case handler typed without any regard for length " * 6

CONTEXTS: dict[NoticeKind, dict[str, Any]] = {
    NoticeKind.DSR_RECEIVED: {
        "request_id": "DSR-2026-0001",
        "request_kind": "access",
        "due_at": "2026-02-15",
    },
    NoticeKind.DSR_VERIFICATION_NEEDED: {
        "request_id": "DSR-2026-0001",
        "request_kind": "erasure",
        "verify_by": "2026-01-30",
    },
    NoticeKind.DSR_EXTENDED: {
        "request_id": "DSR-2026-0001",
        "request_kind": "access",
        "original_due_at": "2026-02-15",
        "new_due_at": "2026-03-17",
        "reasons": ["The request covers records held by three offices", "Archive retrieval"],
    },
    NoticeKind.DSR_COMPLETED: {
        "request_id": "DSR-2026-0001",
        "request_kind": "access",
        "done": ["We gathered everything we hold about you."],
        "kept": [],
    },
    NoticeKind.DSR_DEEMED_REFUSED: {
        "request_id": "DSR-2026-0001",
        "request_kind": "access",
        "due_at": "2026-02-15",
    },
    NoticeKind.DSR_REFUSED: {
        "request_id": "DSR-2026-0001",
        "request_kind": "erasure",
        "reasons": ["The debt is open: the Prescription Act s11 requires us to keep it"],
    },
    NoticeKind.DSR_PACKAGE_READY: {
        "request_id": "DSR-2026-0001",
        "package_token": "tok-3f9a1c",
        "expires_at": "2026-02-22T10:00:00+00:00",
    },
    NoticeKind.RESTRICTION_LIFTING: {"lift_at": "2026-03-01", "request_id": "DSR-2026-0002"},
    NoticeKind.CONSENT_CONFIRMATION: {
        "channel": "email",
        "purpose": "debt-relief offers",
        "status": "granted",
        "effective_at": "2026-01-15T10:00:00+00:00",
    },
    NoticeKind.BREACH_NOTICE: {
        "incident_ref": "INC-7",
        "consequences": ["Phishing e-mails that use your name"],
        "measures": ["We locked the compromised account", "We reported it to the Regulator"],
        "subject_actions": ["Do not click links in unexpected e-mails"],
        "unauthorised_party": "An unknown third party using a stolen password",
        "categories": ["contact details", "account balance"],
    },
    NoticeKind.BREACH_UPDATE: {
        "incident_ref": "INC-7",
        "update": "The investigation confirmed the cause.",
        "measures": ["All staff passwords were reset"],
    },
    NoticeKind.CONTACT_CHANGED: {"contact_kind": "e-mail address", "request_id": "REQ-9"},
}
BREACH_PARTS = (
    "possible consequences",
    "measures taken",
    "What you should do",
    "identity of the unauthorised person",
)


def test_every_kind_has_a_context_here() -> None:
    assert set(CONTEXTS) == set(NoticeKind)


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_kind_renders_for_email_and_sms(kind: NoticeKind) -> None:
    renderer = Renderer()
    email = renderer.email(kind, TENANT, REGULATOR, CONTEXTS[kind])
    sms = renderer.sms(kind, TENANT, REGULATOR, CONTEXTS[kind])
    assert TENANT.display_name in email.subject
    for text in (email.text, email.html):
        assert TENANT.display_name in text
        assert TENANT.website in text
        assert TENANT.privacy_contact in text
    assert sms.startswith(TENANT.display_name)
    assert "<html" in email.html
    assert "<" not in email.text
    assert segments(sms) <= SMS_MAX_SEGMENTS
    assert all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in sms)


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_sms_stays_within_three_segments_whatever_the_free_text(kind: NoticeKind) -> None:
    context = {
        key: [LONG, LONG] if isinstance(value, list) else LONG if key not in _DATES else value
        for key, value in CONTEXTS[kind].items()
    }
    context.update({k: v for k, v in CONTEXTS[kind].items() if k in _KEEP})
    sms = Renderer().sms(kind, TENANT, REGULATOR, context)
    assert segments(sms) <= SMS_MAX_SEGMENTS


_DATES = {"due_at", "new_due_at", "original_due_at", "expires_at", "lift_at", "effective_at"}
_KEEP = _DATES | {
    "status",
    "request_kind",
    "channel",
    "request_id",
    "incident_ref",
    "package_token",
    "contact_kind",
}


@pytest.mark.parametrize("kind", [NoticeKind.BREACH_NOTICE, NoticeKind.BREACH_UPDATE])
def test_breach_notices_have_the_four_s22_5_parts(kind: NoticeKind) -> None:
    email = Renderer().email(kind, TENANT, REGULATOR, CONTEXTS[kind])
    for text in (email.text, email.html):
        for part in BREACH_PARTS:
            assert part in text, part
    if kind is NoticeKind.BREACH_NOTICE:
        assert "stolen password" in email.text
        assert "Do not click links" in email.text


def test_unknown_unauthorised_party_is_said_so() -> None:
    context = {k: v for k, v in CONTEXTS[NoticeKind.BREACH_NOTICE].items()}
    del context["unauthorised_party"]
    email = Renderer().email(NoticeKind.BREACH_NOTICE, TENANT, REGULATOR, context)
    assert "Not known at this time" in email.text


@pytest.mark.parametrize("kind", [NoticeKind.DSR_REFUSED, NoticeKind.DSR_EXTENDED])
def test_refusal_and_extension_give_reasons_and_the_right_to_complain(kind: NoticeKind) -> None:
    email = Renderer().email(kind, TENANT, REGULATOR, CONTEXTS[kind])
    for text in (email.text, email.html):
        assert "right to lodge a complaint" in text
        assert REGULATOR.name in text
        assert REGULATOR.email in text
        assert CONTEXTS[kind]["reasons"][0][:30] in text
    if kind is NoticeKind.DSR_REFUSED:
        sms = Renderer().sms(kind, TENANT, REGULATOR, CONTEXTS[kind])
        assert "Information Regulator" in sms


def test_package_ready_gives_token_and_expiry_never_data() -> None:
    email = Renderer().email(
        NoticeKind.DSR_PACKAGE_READY, TENANT, REGULATOR, CONTEXTS[NoticeKind.DSR_PACKAGE_READY]
    )
    assert "tok-3f9a1c" in email.text
    assert "22 February 2026" in email.text
    assert "never send the information itself" in email.text


@pytest.mark.parametrize("status", ["granted", "withdrawn"])
def test_consent_confirmation_carries_the_opt_out(status: str) -> None:
    context = {**CONTEXTS[NoticeKind.CONSENT_CONFIRMATION], "status": status}
    email = Renderer().email(NoticeKind.CONSENT_CONFIRMATION, TENANT, REGULATOR, context)
    for text in (email.text, email.html):
        assert TENANT.opt_out in text
    if status == "granted":
        sms = Renderer().sms(NoticeKind.CONSENT_CONFIRMATION, TENANT, REGULATOR, context)
        assert TENANT.sms_opt_out in sms


def test_non_marketing_notices_have_no_opt_out_line() -> None:
    email = Renderer().email(
        NoticeKind.DSR_RECEIVED, TENANT, REGULATOR, CONTEXTS[NoticeKind.DSR_RECEIVED]
    )
    assert TENANT.opt_out not in email.text


def test_access_completion_mentions_the_right_to_correction() -> None:
    email = Renderer().email(
        NoticeKind.DSR_COMPLETED, TENANT, REGULATOR, CONTEXTS[NoticeKind.DSR_COMPLETED]
    )
    assert "correct" in email.text


def test_missing_required_context_is_refused() -> None:
    context = {k: v for k, v in CONTEXTS[NoticeKind.BREACH_NOTICE].items() if k != "measures"}
    with pytest.raises(InvalidMessage, match="breach_notice needs measures"):
        Renderer().email(NoticeKind.BREACH_NOTICE, TENANT, REGULATOR, context)


def test_html_is_autoescaped_and_text_is_not() -> None:
    context = {**CONTEXTS[NoticeKind.DSR_COMPLETED], "done": ["<script>x</script> & more"]}
    email = Renderer().email(NoticeKind.DSR_COMPLETED, TENANT, REGULATOR, context)
    assert "&lt;script&gt;" in email.html
    assert "<script>" not in email.html
    assert "<script>x</script> & more" in email.text


@pytest.mark.parametrize(
    ("text", "count"),
    [("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3), ("a" * 459, 3)],
)
def test_segment_arithmetic(text: str, count: int) -> None:
    assert segments(text) == count


def test_extension_characters_count_two_and_the_limit_is_enforced() -> None:
    assert septets("{}") == 4
    assert segments("a" * 158 + "€") == 1
    assert segments("a" * 159 + "€") == 2
    assert segments("a" * 460) == 4


def test_sms_over_three_segments_is_refused() -> None:
    tenant = TENANT.model_copy(update={"website": "https://example.org/" + "x" * 400})
    with pytest.raises(InvalidMessage, match="over 3 segments"):
        Renderer().sms(
            NoticeKind.DSR_RECEIVED, tenant, REGULATOR, CONTEXTS[NoticeKind.DSR_RECEIVED]
        )


def test_gsm7_transliterates_and_replaces() -> None:
    assert gsm7("it\u2019s \u201cfine\u201d \u2013 ok \u4e2d") == 'it\'s "fine" - ok ?'


def test_the_dsr_workers_context_names_are_understood() -> None:
    """workers/dsr writes kind, due_on, reason, token, lift_after: the templates accept them."""
    renderer = Renderer()
    cases = [
        (NoticeKind.DSR_RECEIVED, {"request_id": "R1", "kind": "access", "due_on": "2026-02-15"}),
        (NoticeKind.DSR_VERIFICATION_NEEDED, {"request_id": "R1", "kind": "erasure"}),
        (
            NoticeKind.DSR_EXTENDED,
            {"request_id": "R1", "kind": "access", "due_on": "2026-03-15", "reason": "volume"},
        ),
        (
            NoticeKind.DSR_REFUSED,
            {"request_id": "R1", "kind": "erasure", "status": "refused", "reason": "open debt"},
        ),
        (
            NoticeKind.DSR_COMPLETED,
            {"request_id": "R1", "kind": "restriction", "done": ["Lifted on 1 March"]},
        ),
        (
            NoticeKind.DSR_PACKAGE_READY,
            {"request_id": "R1", "kind": "access", "token": "tok-1", "expires_at": "2026-02-22"},
        ),
        (NoticeKind.RESTRICTION_LIFTING, {"request_id": "R1", "lift_after": "2026-03-01"}),
    ]
    for kind, context in cases:
        email = renderer.email(kind, TENANT, REGULATOR, context)
        renderer.sms(kind, TENANT, REGULATOR, context)
        assert "R1" in email.text
        assert "{'lifting'" not in email.text
    refused = renderer.email(NoticeKind.DSR_REFUSED, TENANT, REGULATOR, cases[3][1])
    assert "open debt" in refused.text


def test_every_final_answer_says_what_was_done_kept_and_how_to_complain() -> None:
    context = {
        "request_id": "R9",
        "request_kind": "erasure",
        "regime": "gdpr",
        "done": ["Deleted or de-identified: collection letters (2 records)."],
        "kept": [
            {
                "what": "debts under collection (account acc-1)",
                "basis": "An open debt is always a legal hold",
                "until": "while the debt is open",
            },
            {"what": "payments", "basis": "Tax Administration Act s29", "until": "2028-06-30"},
        ],
    }
    email = Renderer().email(NoticeKind.DSR_COMPLETED, TENANT, REGULATOR, context)
    for text in (email.text, email.html):
        assert "Deleted or de-identified: collection letters" in text
        assert "An open debt is always a legal hold" in text
        assert "Kept until: while the debt is open" in text
        assert "Kept until: 30 June 2028" in text
        assert REGULATOR.name in text
        assert "GDPR article 77" in text


def test_a_deemed_refusal_names_the_remedies() -> None:
    context = CONTEXTS[NoticeKind.DSR_DEEMED_REFUSED]
    email = Renderer().email(NoticeKind.DSR_DEEMED_REFUSED, TENANT, REGULATOR, context)
    for part in ("PAIA section 58", "section 77A", "section 78", REGULATOR.email):
        assert part in email.text
