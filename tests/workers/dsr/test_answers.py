"""What a final answer says (docs/rules.md "Answers"), without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from messages.dsr import RequestKind
from workers.dsr.answers import answer


def describe(table: str) -> str:
    return {"accounts": "debts under collection", "notes": "agents' notes"}.get(table, table)


ERASED_WITH_HOLDS: dict[str, Any] = {
    "erased": {"notes": 2},
    "held": {
        "accounts:acc-1": {"hold": "open_debt", "basis": "An open debt", "until": "while open"},
    },
    "suppressed_channels": ["email"],
}


@pytest.mark.parametrize(
    ("kind", "status", "outcome", "done", "kept"),
    [
        (RequestKind.ERASURE, "partially_completed", ERASED_WITH_HOLDS, "agents' notes (2", 2),
        (RequestKind.ACCESS, "completed", {"rows": {"accounts": 3}}, "debts under collection", 0),
        (RequestKind.ACCESS, "completed", {"rows": {}}, "hold no personal information", 0),
        (
            RequestKind.RECTIFICATION,
            "partially_completed",
            {"applied": ["debtors.last_name"], "refused": {"accounts.balance_cents": "no"}},
            "Corrected: debtors.last_name",
            1,
        ),
        (
            RequestKind.OBJECTION,
            "completed",
            {"objections": {"direct_marketing": "consent_withdrawn_on_every_channel"}},
            "every marketing purpose",
            0,
        ),
        (RequestKind.RESTRICTION, "completed", {"restricted": ["*"]}, "all your information", 0),
    ],
)
def test_a_final_answer_says_what_was_done_and_what_was_kept_with_its_basis(
    kind: RequestKind, status: str, outcome: dict[str, Any], done: str, kept: int
) -> None:
    said = answer(kind, status, outcome, "reason", describe)
    assert any(done in sentence for sentence in said["done"])
    assert len(said["kept"]) == kept
    for item in said["kept"]:
        assert item["basis"]
        assert item["until"]


def test_an_erasure_answer_names_each_hold_and_the_kept_opt_out() -> None:
    said = answer(RequestKind.ERASURE, "partially_completed", ERASED_WITH_HOLDS, "x", describe)
    assert said["kept"][0] == {
        "what": "debts under collection (account acc-1)",
        "basis": "An open debt",
        "until": "while open",
    }
    assert "reg 58(4)" in said["kept"][1]["basis"]


def test_a_refusal_says_why() -> None:
    outcome = {"applied": [], "refused": {"accounts.balance_cents": "may not be corrected"}}
    said = answer(RequestKind.RECTIFICATION, "refused", outcome, "nothing could be made", describe)
    assert said["reasons"] == ["accounts.balance_cents: may not be corrected"]
    assert answer(RequestKind.ERASURE, "refused", {}, "mismatch", describe)["reasons"] == [
        "mismatch"
    ]
