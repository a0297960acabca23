"""What a final answer tells the subject, as data for the notice templates.

docs/rules.md "Answers": every final answer says what was done, what was kept and
why (the legal basis and until when, per hold), and how to complain to the
Information Regulator (POPIA s74; for GDPR subjects also their supervisory
authority, GDPR art 77: the templates add both). A refusal says why. A PAIA
access request not answered in time is deemed refused (PAIA s58) and the subject
is told their remedies.

``answer`` turns a request's outcome (as stored in ``dsr_requests.outcome``) into
plain sentences (``done``), one line per kept item (``kept``: what, basis, until)
and, for a refusal, the ``reasons``. It reads no store and sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from messages.dsr import RequestKind

Describe = Callable[[str], str]
KEPT_OPT_OUT = {
    "what": "your marketing opt-out, reduced to a coded entry that cannot be read back",
    "basis": "National Credit Regulations reg 58(4): opt-outs are kept so that they keep working",
    "until": "3 years after the erasure",
}
OBJECTION_OUTCOMES = {
    "consent_withdrawn_on_every_channel": "we stopped all direct marketing to you, on every "
    "channel and for every marketing purpose",
    "processing_stopped": "we stopped this processing",
    "continued_required_by_legislation": "this processing continues because legislation "
    "requires it",
}


def answer(
    kind: RequestKind, status: str, outcome: dict[str, Any], reason: str, describe: Describe
) -> dict[str, Any]:
    """The ``done``, ``kept`` and ``reasons`` of a final notice."""
    build = _BUILDERS.get(kind, _generic)
    done, kept = build(outcome, describe)
    reasons = (_refusals(outcome) or [reason]) if status == "refused" else []
    return {"status": status, "done": done or [reason], "kept": kept, "reasons": reasons}


def _scope(scope: str, describe: Describe) -> str:
    table, _, account = scope.partition(":")
    text = describe(table)
    return f"{text} (account {account})" if account else text


def _erasure(outcome: dict[str, Any], describe: Describe) -> tuple[list[str], list[Any]]:
    done = [
        f"Deleted or de-identified: {describe(t)} ({n} record{'s' if n != 1 else ''})."
        for t, n in sorted(outcome.get("erased", {}).items())
    ]
    kept = [
        {
            "what": _scope(scope, describe),
            "basis": hold["basis"],
            "until": hold["until"],
        }
        for scope, hold in sorted(outcome.get("held", {}).items())
    ]
    if outcome.get("suppressed_channels"):
        kept.append(KEPT_OPT_OUT)
    if kept:
        done.append("What the law still requires us to keep is restricted: we only store it.")
    return done, kept


def _export(outcome: dict[str, Any], describe: Describe) -> tuple[list[str], list[Any]]:
    rows = outcome.get("rows", {})
    if not any(rows.values()):
        return ["We hold no personal information about you."], []
    listed = ", ".join(f"{describe(t)} ({n})" for t, n in sorted(rows.items()) if n)
    done = [f"We gathered everything we hold about you: {listed}."]
    if outcome.get("package_expires_at"):
        done.append("Your copy is ready to collect with the code we sent you separately.")
    if outcome.get("handover"):
        done.append("We are handing a copy to the organisation you named.")
    return done, []


def _rectification(outcome: dict[str, Any], describe: Describe) -> tuple[list[str], list[Any]]:
    done = [f"Corrected: {field}." for field in outcome.get("applied", [])]
    kept = [
        {
            "what": f"{field} as it was",
            "basis": f"not corrected: {why}; a note of your request is kept with your data",
            "until": "as long as the data is kept",
        }
        for field, why in sorted(outcome.get("refused", {}).items())
    ]
    return done, kept


def _restriction(outcome: dict[str, Any], describe: Describe) -> tuple[list[str], list[Any]]:
    if "lifting" in outcome:
        return [f"The restriction will be lifted on {outcome.get('lift_after', '')[:10]}."], []
    scopes = ", ".join("all your information" if s == "*" else s for s in outcome["restricted"])
    return [f"Restricted (stored only, not otherwise used): {scopes}."], []


def _objection(outcome: dict[str, Any], describe: Describe) -> tuple[list[str], list[Any]]:
    done = [
        f"{purpose.replace('_', ' ')}: {OBJECTION_OUTCOMES.get(result, result)}."
        for purpose, result in sorted(outcome.get("objections", {}).items())
    ]
    return done, []


def _generic(outcome: dict[str, Any], describe: Describe) -> tuple[list[str], list[Any]]:
    return [], []


def _refusals(outcome: dict[str, Any]) -> list[str]:
    refused = outcome.get("refused")
    if isinstance(refused, dict):
        return [f"{field}: {why}" for field, why in sorted(refused.items())]
    return [str(refused)] if refused else []


_BUILDERS = {
    RequestKind.ERASURE: _erasure,
    RequestKind.ACCESS: _export,
    RequestKind.PORTABILITY: _export,
    RequestKind.RECTIFICATION: _rectification,
    RequestKind.RESTRICTION: _restriction,
    RequestKind.OBJECTION: _objection,
}
