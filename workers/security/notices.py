"""What a breach notice tells a data subject (POPIA s22(5)), as a rule table.

POPIA s22(5) requires enough information for the subject to take protective
measures: (a) the possible consequences of the compromise; (b) the measures
the responsible party intends to take or has taken; (c) a recommendation of
what the subject should do; (d) the identity of the unauthorised person, if
known. Every ``breach_notice`` carries the four parts (``consequences``,
``measures``, ``subject_actions``, ``unauthorised_party``), and so does every
``breach_update`` of a later phase (GDPR art 34, art 33(4): information may
follow in phases), with the ``update`` saying what is new.

The texts are built from the incident's alert categories and data categories;
they never quote an alert's free-text description. The notice templates
(workers/notifier/templates/breach_*.txt) render them.
"""

from __future__ import annotations

from typing import Any

from messages.security import ACCOUNT_TAKEOVER as TAKEOVER
from messages.security import AlertCategory, Compromise, DataCategory
from workers.security.rules import Incident

UNKNOWN_PARTY = "Not known at this time. We will tell you if we find out."

CONSEQUENCES: dict[AlertCategory, str] = {
    AlertCategory.BRUTE_FORCE: "Someone may have got into your online account with us.",
    AlertCategory.CREDENTIAL_STUFFING: "Someone may have got into your online account with us.",
    AlertCategory.UNAUTHORIZED_ACCESS: "Someone who should not have may have seen your records.",
    AlertCategory.PRIVILEGE_ESCALATION: "Someone may have seen or changed your records.",
    AlertCategory.DATA_EXFILTRATION: "A copy of your information may be in unknown hands.",
    AlertCategory.MALWARE: "Malicious software may have read or changed your information.",
    AlertCategory.RANSOMWARE: "Your information may have been copied, locked or damaged.",
    AlertCategory.LOST_DEVICE: "A lost device holding your information may be found by others.",
    AlertCategory.MISDELIVERY: "A letter or message about you reached the wrong person.",
    AlertCategory.DATA_DESTRUCTION: "Some of your records may have been deleted or damaged.",
    AlertCategory.INSIDER_MISUSE: "A staff member may have used your information improperly.",
    AlertCategory.OTHER: "Your information may have been seen by someone unauthorised.",
}
DATA_CONSEQUENCES: dict[DataCategory, str] = {
    DataCategory.IDENTITY: "Your name and ID number could be used to impersonate you.",
    DataCategory.CONTACT: "You may receive scam calls, SMSes or e-mails that seem to come from us.",
    DataCategory.FINANCIAL: "Your bank or account details could be used for fraud.",
    DataCategory.CREDIT: "Details of your debt could be used to pressure or deceive you.",
    DataCategory.CREDENTIALS: "Your password could be tried on other websites.",
    DataCategory.SPECIAL: "Sensitive information about you could be disclosed.",
}
SUBJECT_ACTIONS: dict[DataCategory, str] = {
    DataCategory.IDENTITY: "Consider protective registration with the Southern African "
    "Fraud Prevention Service (SAFPS).",
    DataCategory.FINANCIAL: "Check your bank statements and report unknown debit orders "
    "to your bank.",
    DataCategory.CREDENTIALS: "Change your password here and anywhere else you used it.",
}
ALWAYS_DO = (
    "Be careful of calls, SMSes or e-mails asking for personal information or payment; "
    "we will never ask for your password or PIN.",
    "Pay only into the account named on your official statement.",
)


def consequences(incident: Incident) -> list[str]:
    found = [CONSEQUENCES[c] for c in sorted(incident.alert_categories)]
    found += [
        DATA_CONSEQUENCES[d] for d in sorted(incident.data_categories) if d in DATA_CONSEQUENCES
    ]
    return list(dict.fromkeys(found))


def measures(incident: Incident) -> list[str]:
    found = ["We are investigating what happened and how to stop it happening again."]
    if incident.alert_categories & TAKEOVER:
        found.append("We locked the affected accounts; you will be asked to set a new password.")
    if incident.compromise is Compromise.CONFIRMED:
        found.append("We confirmed the compromise and report it to the Information Regulator.")
    else:
        found.append("We report the compromise to the Information Regulator.")
    return found


def subject_actions(incident: Incident) -> list[str]:
    found = [SUBJECT_ACTIONS[d] for d in sorted(incident.data_categories) if d in SUBJECT_ACTIONS]
    if (
        incident.alert_categories & TAKEOVER
        and DataCategory.CREDENTIALS not in incident.data_categories
    ):
        found.append("Change your password when you next sign in.")
    return [*found, *ALWAYS_DO]


def notice_context(incident: Incident) -> dict[str, Any]:
    """The s22(5) parts and the facts the ``breach_notice`` template needs."""
    return {
        "incident_ref": incident.incident_id,
        "consequences": consequences(incident),
        "measures": measures(incident),
        "subject_actions": subject_actions(incident),
        "unauthorised_party": incident.unauthorised_party or UNKNOWN_PARTY,
        "categories": sorted(d.value for d in incident.data_categories),
        "discovered_at": incident.aware_at.isoformat() if incident.aware_at else None,
        "compromise": incident.compromise.value if incident.compromise else None,
        "phase": incident.phase,
    }


def update_context(incident: Incident, news: list[str]) -> dict[str, Any]:
    """A ``breach_update``: what is new, plus the four parts as they stand now."""
    return {**notice_context(incident), "update": " ".join(news)}


def news_for(previous: Incident, current: Incident) -> list[str]:
    """What a later phase tells subjects who already had a notice."""
    news = []
    if (
        previous.compromise is not Compromise.CONFIRMED
        and current.compromise is Compromise.CONFIRMED
    ):
        news.append("We have now confirmed that your personal information was compromised.")
    added = sorted(d.value for d in current.data_categories - previous.data_categories)
    if added:
        news.append(f"More kinds of your information were involved: {', '.join(added)}.")
    return news or ["We have new information about this incident."]
