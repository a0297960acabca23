"""Rectification, restriction and objection, as docs/rules.md "Data-subject requests" says.

* Rectification (POPIA s24; GDPR art 16, 19): only fields the data map marks
  correctable; before and after go into the audit as keyed digests, never raw
  values; a refused correction the subject insists on leaves a "correction
  requested but not made" note that every later access export returns.
* Restriction (POPIA s14(6)-(8); GDPR art 18): the subject, or named categories,
  become storage-only; lifting is announced to the subject first and happens
  only after the notice period (s14(8)).
* Objection (POPIA s11(3)-(4); GDPR art 21): to direct marketing it is absolute
  and withdraws consent on every channel through the consent rules
  (``workers.consent.handlers.apply``);
  any other purpose is recorded and its processing flagged as stopped, unless
  legislation requires it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from config.datamap import ColumnMap, DataMap
from infra.runtime.worker import SEALED_ADDRESS, Effects
from infra.store import Transaction
from messages.consent import (
    DIRECT_MARKETING,
    Channel,
    ConsentChanged,
    ConsentChangedPayload,
    ConsentSource,
    ConsentStatus,
    Evidence,
    is_marketing,
)
from messages.dsr import Correction, luhn_ok
from workers.consent.handlers import apply, key_of
from workers.consent.tables import current_states
from workers.platform.tables import ALL, RESTRICTION_UPSERT

NOTE_INSERT = (
    "INSERT INTO dsr_correction_notes (tenant_id, subject_ref, field, requested_value, reason,"
    " request_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
FLAG_UPSERT = (
    "INSERT INTO processing_flags (tenant_id, subject_ref, purpose, flag, outcome, grounds,"
    " request_id, recorded_at, objected_at) VALUES (?, ?, ?, 'objected', ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE SET outcome = excluded.outcome,"
    " grounds = excluded.grounds, request_id = excluded.request_id,"
    " recorded_at = excluded.recorded_at, objected_at = excluded.objected_at"
)


def value_digest(key: bytes, value: object) -> str:
    """Keyed digest for the audit: shows that a value changed without keeping it."""
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32]


def format_problem(column: ColumnMap, value: str) -> str | None:
    if not value.strip():
        return "value is empty"
    if column.format == "sa_id" and not (len(value) == 13 and value.isdigit() and luhn_ok(value)):
        return "not a valid South African ID number"
    if column.format == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return "not a date (YYYY-MM-DD)"
    return None


@dataclass
class RectificationResult:
    applied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    tables: set[str] = field(default_factory=set)


async def rectify(
    tx: Transaction,
    effects: Effects,
    datamap: DataMap,
    digest_key: bytes,
    subject_ref: str,
    corrections: list[Correction],
    *,
    insist: bool,
    request_id: str,
    source: str,
    uncorrectable_here: bool,
) -> RectificationResult:
    """The corrections whose field lives in ``source``, made in ``tx`` (that source's
    transaction); with ``uncorrectable_here``, also the refusals of fields that may not be
    corrected at all (one step answers for them)."""
    result = RectificationResult()
    for correction in corrections:
        target = datamap.correctable(correction.field)
        if target is None and not uncorrectable_here:
            continue
        if target is not None and datamap.source_of(target[0]) != source:
            continue
        reason = await _apply(tx, effects, datamap, digest_key, subject_ref, correction, result)
        if reason is None:
            continue
        result.refused[correction.field] = reason
        if insist:
            effects.write(
                NOTE_INSERT,
                (
                    effects.tenant_id,
                    subject_ref,
                    correction.field,
                    correction.value,
                    reason,
                    request_id,
                    effects.now.isoformat(),
                ),
            )
        effects.audit(
            "correction_refused",
            subject_ref,
            field=correction.field,
            reason=reason,
            note_kept=insist,
        )
    return result


async def _apply(
    tx: Transaction,
    effects: Effects,
    datamap: DataMap,
    digest_key: bytes,
    subject_ref: str,
    correction: Correction,
    result: RectificationResult,
) -> str | None:
    """Apply one correction; return why not, or None when applied."""
    target = datamap.correctable(correction.field)
    if target is None:
        return "the field may not be corrected through a request"
    table, column, spec, row_name = target
    problem = format_problem(spec, correction.value)
    if problem:
        return problem
    subject_column = datamap.tables[table].subject_column
    where = f"WHERE tenant_id = ? AND {subject_column} = ?"
    params: tuple[str, ...] = (effects.tenant_id, subject_ref)
    if spec.row_key and row_name is not None:
        where += f" AND {spec.row_key} = ?"
        params += (row_name,)
    row = await tx.fetchone(f"SELECT {column} FROM {table} {where} LIMIT 1", params)
    if row is None:
        return "no such record is held"
    await tx.execute(f"UPDATE {table} SET {column} = ? {where}", (correction.value, *params))
    if table == CONTACT_TABLE and row_name is not None:
        tell_old_address(effects, subject_ref, row_name, str(row[0]))
    effects.audit(
        "field_rectified",
        subject_ref,
        field=correction.field,
        before_digest=value_digest(digest_key, row[0]),
        after_digest=value_digest(digest_key, correction.value),
    )
    result.applied.append(correction.field)
    result.tables.add(table)
    return None


#: The platform's contact points: a change of one is also told to the old address.
CONTACT_TABLE = "contact_points"
#: contact_points.kind -> (notice channel, words for the notice).
CONTACT_CHANNELS = {"email": ("email", "e-mail address"), "phone": ("sms", "phone number")}


def tell_old_address(effects: Effects, subject_ref: str, kind: str, old_value: str) -> None:
    """A contact point changed: tell the *old* address too (issue 11, A3).

    Whoever changed the address may not be the subject (an account takeover); the
    notice goes to the address being replaced, sealed into the outbox row
    (``Effects.notify(sealed={"address": ...})``), because by the time the notifier
    runs the contact points hold only the new one. A postal address has no channel.
    """
    channel = CONTACT_CHANNELS.get(kind)
    if channel is None or not old_value.strip():
        return
    notice_id = effects.notify(
        subject_ref,
        "contact_changed",
        channel[0],
        {"contact_kind": channel[1]},
        sealed={SEALED_ADDRESS: old_value},
    )
    effects.audit("old_contact_told", subject_ref, contact_kind=kind, notice_id=notice_id)


def restrict(
    effects: Effects, subject_ref: str, categories: list[str], grounds: str, request_id: str
) -> list[str]:
    """Mark the subject (or the named categories) storage-only."""
    scopes = categories or [ALL]
    for scope in scopes:
        effects.write(
            RESTRICTION_UPSERT,
            (
                effects.tenant_id,
                subject_ref,
                scope,
                "requested",
                f"restriction requested: {grounds}",
                request_id,
                effects.now.isoformat(),
                None,
            ),
        )
    effects.audit("processing_restricted", subject_ref, scopes=scopes, grounds=grounds)
    return scopes


async def schedule_lift(
    tx: Transaction, effects: Effects, subject_ref: str, notice: timedelta
) -> tuple[list[str], datetime]:
    """Announce the lifting of requested restrictions; the sweep lifts them after ``notice``."""
    rows = await tx.fetchall(
        "SELECT scope FROM restrictions WHERE tenant_id = ? AND subject_ref = ?"
        " AND origin = 'requested'",
        (effects.tenant_id, subject_ref),
    )
    scopes = [row[0] for row in rows]
    lift_after = effects.now + notice
    if scopes:
        effects.write(
            "UPDATE restrictions SET lift_after = ? WHERE tenant_id = ? AND subject_ref = ?"
            " AND origin = 'requested'",
            (lift_after.isoformat(), effects.tenant_id, subject_ref),
        )
        effects.audit(
            "restriction_lift_scheduled",
            subject_ref,
            scopes=scopes,
            lift_after=lift_after.isoformat(),
        )
    return scopes, lift_after


async def object_to(
    tx: Transaction,
    effects: Effects,
    subject_ref: str,
    purposes: list[str],
    grounds: str | None,
    mandatory: list[str],
    request_id: str,
    made_at: datetime,
) -> dict[str, str]:
    """Record each objection; return purpose -> outcome."""
    outcomes: dict[str, str] = {}
    for purpose in purposes:
        if purpose == DIRECT_MARKETING:
            await _withdraw_everywhere(tx, effects, subject_ref, request_id, made_at)
            outcome = "consent_withdrawn_on_every_channel"
        elif purpose in mandatory:
            outcome = "continued_required_by_legislation"
        else:
            outcome = "processing_stopped"
        effects.write(
            FLAG_UPSERT,
            (
                effects.tenant_id,
                subject_ref,
                purpose,
                outcome,
                grounds,
                request_id,
                effects.now.isoformat(),
                made_at.isoformat(),
            ),
        )
        effects.audit("objection_recorded", subject_ref, purpose=purpose, outcome=outcome)
        outcomes[purpose] = outcome
    return outcomes


async def _withdraw_everywhere(
    tx: Transaction, effects: Effects, subject_ref: str, request_id: str, made_at: datetime
) -> None:
    """Withdraw every marketing consent on every channel, through the consent rules.

    POPIA s11(3)(b), GDPR art 21(3): the objection covers direct marketing for every
    marketing purpose the subject consented to; a consent to a marketing purpose that
    arrives later but is dated before the objection is barred by the consent worker.
    """
    rows = await tx.fetchall(
        "SELECT DISTINCT purpose FROM consent_state WHERE tenant_id = ? AND subject_ref = ?",
        (effects.tenant_id, subject_ref),
    )
    purposes = sorted({DIRECT_MARKETING} | {str(p) for (p,) in rows if is_marketing(str(p))})
    changes = [
        ConsentChanged(
            tenant_id=effects.tenant_id,
            occurred_at=made_at,
            correlation_id=request_id,
            payload=ConsentChangedPayload(
                subject_ref=subject_ref,
                channel=channel,
                purpose=purpose,
                status=ConsentStatus.WITHDRAWN,
                source=ConsentSource.OBJECTION,
                evidence=Evidence(reference=f"dsr:{request_id}", captured_by="privacyops:dsr"),
            ),
        )
        for channel in Channel
        for purpose in purposes
    ]
    current = await current_states(tx, [key_of(change) for change in changes])
    for change in changes:  # the request's own answer confirms it to the subject
        apply(effects, change, current.get(key_of(change)), confirm=False)
