"""Opt-outs that outlive the consent records: suppression entries and objections.

Two marks stop marketing (or another purpose) whatever the consent tables say:

* **Suppression entries** (``suppression_list``, NCR reg 58(4)): when a subject's
  data is erased, the opt-out itself is not: it is reduced to keyed digests (of
  the subject reference and of each contact value) per channel and purpose, with
  the time of the withdrawal and whether the person refused when asked (POPIA
  s69(2)(a): never ask again). Kept for ``opt_out_years``.
* **Objections** (``processing_flags``, written by the DSR worker, POPIA s11(3);
  GDPR art 21): an objection to direct marketing covers every marketing purpose
  on every channel; an objection to another purpose whose processing stopped
  covers that purpose.

Each is a *barrier*: a time up to which no grant counts. ``barriers`` finds the
latest barrier per (tenant, subject, channel, purpose), in a few queries for a
whole batch; the consent worker refuses older grants with it and every
contactability check ignores a grant that is not newer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from infra.store import Transaction
from messages.consent import DIRECT_MARKETING, is_marketing
from workers.platform.keys import keyed_digest

#: A suppression entry or objection that covers every channel (or every purpose).
ANY = "*"
#: Which contact point a marketing channel uses.
CHANNEL_CONTACT = {
    "email": "email",
    "sms": "phone",
    "phone": "phone",
    "whatsapp": "phone",
    "post": "postal",
}
#: Objection outcomes that stop processing for the purpose (processing_flags.outcome).
STOPPING = ("consent_withdrawn_on_every_channel", "processing_stopped")

SUPPRESSION_UPSERT = (
    "INSERT INTO suppression_list (tenant_id, contact_digest, channel, purpose, basis,"
    " withdrawn_at, never_ask, recorded_at, expires_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, contact_digest, channel, purpose) DO UPDATE SET"
    " basis = excluded.basis,"
    " withdrawn_at = CASE WHEN excluded.withdrawn_at > suppression_list.withdrawn_at"
    " THEN excluded.withdrawn_at ELSE suppression_list.withdrawn_at END,"
    " never_ask = CASE WHEN excluded.never_ask > suppression_list.never_ask"
    " THEN excluded.never_ask ELSE suppression_list.never_ask END,"
    " expires_on = CASE WHEN excluded.expires_on > suppression_list.expires_on"
    " THEN excluded.expires_on ELSE suppression_list.expires_on END"
)
_CHUNK = 300

Key = tuple[str, str, str, str]  # tenant, subject_ref, channel, purpose


def subject_digest(key: bytes, subject_ref: str) -> str:
    """The digest that suppresses a subject by reference (however it is contacted)."""
    return keyed_digest(key, f"subject:{subject_ref}")


@dataclass(frozen=True)
class Entry:
    """One suppression entry, as read back."""

    channel: str
    purpose: str
    withdrawn_at: datetime
    never_ask: bool

    def covers(self, channel: str, purpose: str) -> bool:
        return self.channel in (ANY, channel) and self.purpose in (ANY, purpose)


def _placeholders(n: int) -> str:
    return ", ".join("?" for _ in range(n))


async def contacts_of(
    tx: Transaction, tenant_id: str, subjects: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """(kind, value) of each subject's contact points."""
    found: dict[str, list[tuple[str, str]]] = {}
    for start in range(0, len(subjects), _CHUNK):
        chunk = list(subjects[start : start + _CHUNK])
        rows = await tx.fetchall(
            "SELECT subject_ref, kind, value FROM contact_points WHERE tenant_id = ?"
            f" AND subject_ref IN ({_placeholders(len(chunk))})",
            (tenant_id, *chunk),
        )
        for subject, kind, value in rows:
            found.setdefault(str(subject), []).append((str(kind), str(value)))
    return found


async def entries(
    tx: Transaction, tenant_id: str, digests: Sequence[str], today: date
) -> dict[str, list[Entry]]:
    """The unexpired suppression entries of each digest."""
    found: dict[str, list[Entry]] = {}
    unique = sorted(set(digests))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        rows = await tx.fetchall(
            "SELECT contact_digest, channel, purpose, withdrawn_at, never_ask FROM"
            " suppression_list WHERE tenant_id = ? AND expires_on > ?"
            f" AND contact_digest IN ({_placeholders(len(chunk))})",
            (tenant_id, today.isoformat(), *chunk),
        )
        for digest, channel, purpose, withdrawn_at, never_ask in rows:
            found.setdefault(str(digest), []).append(
                Entry(channel, purpose, datetime.fromisoformat(withdrawn_at), bool(never_ask))
            )
    return found


async def objections_of(
    tx: Transaction, tenant_id: str, subjects: Sequence[str]
) -> dict[str, dict[str, datetime]]:
    """Per subject, each purpose whose processing an objection stopped, and since when."""
    found: dict[str, dict[str, datetime]] = {}
    for start in range(0, len(subjects), _CHUNK):
        chunk = list(subjects[start : start + _CHUNK])
        rows = await tx.fetchall(
            "SELECT subject_ref, purpose, objected_at FROM processing_flags WHERE tenant_id = ?"
            f" AND outcome IN ({_placeholders(len(STOPPING))})"
            f" AND subject_ref IN ({_placeholders(len(chunk))})",
            (tenant_id, *STOPPING, *chunk),
        )
        for subject, purpose, objected_at in rows:
            found.setdefault(str(subject), {})[str(purpose)] = datetime.fromisoformat(objected_at)
    return found


def objection_covers(objected: dict[str, datetime], purpose: str) -> datetime | None:
    """Since when an objection stops ``purpose``: its own, or direct marketing's if marketing."""
    times = [objected[purpose]] if purpose in objected else []
    if is_marketing(purpose) and DIRECT_MARKETING in objected:
        times.append(objected[DIRECT_MARKETING])
    return max(times, default=None)


def _digests_of(
    key: bytes, subject: str, channel: str, contacts: list[tuple[str, str]]
) -> list[str]:
    kind = CHANNEL_CONTACT.get(channel)
    return [subject_digest(key, subject)] + [
        keyed_digest(key, value) for k, value in contacts if k == kind
    ]


def still_dated(now: datetime | None = None) -> date:
    """The date it still is somewhere (UTC-12) now. A kept opt-out runs until its expiry
    date has begun in every zone: it never ends early for a tenant behind UTC (its 3 years
    count from the erasure's local date), at the cost of at most a day more of suppression."""
    return ((now or datetime.now(UTC)) - timedelta(hours=12)).date()


async def barriers(
    tx: Transaction, key: bytes, wanted: Sequence[Key], today: date
) -> dict[Key, datetime]:
    """The latest barrier per (tenant, subject, channel, purpose); absent when there is none."""
    result: dict[Key, datetime] = {}
    by_tenant: dict[str, set[str]] = {}
    for tenant, subject, _, _ in wanted:
        by_tenant.setdefault(tenant, set()).add(subject)
    for tenant, subject_set in by_tenant.items():
        subjects = sorted(subject_set)
        contacts = await contacts_of(tx, tenant, subjects)
        objected = await objections_of(tx, tenant, subjects)
        keys = [k for k in wanted if k[0] == tenant]
        digests = {k: _digests_of(key, k[1], k[2], contacts.get(k[1], [])) for k in keys}
        found = await entries(tx, tenant, [d for ds in digests.values() for d in ds], today)
        for k in keys:
            _, subject, channel, purpose = k
            times = [
                e.withdrawn_at
                for d in digests[k]
                for e in found.get(d, [])
                if e.covers(channel, purpose)
            ]
            stop = objection_covers(objected.get(subject, {}), purpose)
            if stop is not None:
                times.append(stop)
            if times:
                result[k] = max(times)
    return result


async def never_ask(
    tx: Transaction, key: bytes, tenant_id: str, subject_ref: str, today: date
) -> bool:
    """Whether a suppression entry says the person refused when asked (POPIA s69(2)(a))."""
    contacts = (await contacts_of(tx, tenant_id, [subject_ref])).get(subject_ref, [])
    digests = [subject_digest(key, subject_ref)] + [keyed_digest(key, v) for _, v in contacts]
    found = await entries(tx, tenant_id, digests, today)
    return any(e.never_ask for es in found.values() for e in es)
