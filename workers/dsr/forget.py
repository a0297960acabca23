"""What privacyops itself keeps about an erased subject (docs/rules.md "Erasure").

Erasure also covers privacyops' own records (POPIA s24, s14; GDPR art 17), except
the proof it must keep, reduced to keyed digests. Once nothing of the subject is
held any more (the erasure is complete, now or when the last hold expired):

* requests (``dsr_requests``): the subject reference becomes ``erased-<digest>``
  and the details lose their values (a correction's value becomes its digest,
  free-text grounds and destinations go); kind, dates, status and outcome stay;
* correction notes: the requested value becomes its digest;
* objections and restrictions of the subject are deleted (the audit log holds
  their record; the suppression entries keep the marketing opt-out);
* export packages are revoked now; the package sweep deletes their files;
* notices: a delivered one keeps only ``{"erased": true}`` and the reduced
  reference; one still on its way (the erasure's own answer among them) is listed
  in ``erasure_followups`` and reduced by the sweep once it was sent or failed.

The audit log is the proof and is not rewritten: it holds the opaque reference
and digests, never values.
"""

from __future__ import annotations

import json
from typing import Any

from infra.runtime.tables import NOTICE_FINAL, NOTICE_FORGET, NOTICES_OF_SUBJECT
from infra.runtime.worker import Effects
from infra.store import Transaction
from messages.dsr import ObjectionDetails, PortabilityDetails, RectificationDetails
from workers.dsr.requests import DETAILS, Request
from workers.platform.keys import keyed_digest
from workers.platform.optouts import subject_digest

FORGOTTEN = json.dumps({"erased": True})
FOLLOWUP_INSERT = (
    "INSERT INTO erasure_followups (tenant_id, notice_id, subject_ref, recorded_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, notice_id) DO NOTHING"
)


def reduced_ref(key: bytes, subject_ref: str) -> str:
    """The reference privacyops keeps for an erased subject: a keyed digest."""
    return f"erased-{subject_digest(key, subject_ref)[:40]}"


def reduce_details(details: Any, key: bytes) -> Any:
    """A request's details without the values: enough to show what was asked."""
    if isinstance(details, RectificationDetails):
        corrections = [
            c.model_copy(update={"value": f"digest:{keyed_digest(key, c.value)[:32]}"})
            for c in details.corrections
        ]
        return details.model_copy(update={"corrections": corrections})
    if isinstance(details, ObjectionDetails):
        return details.model_copy(update={"grounds": None})
    if isinstance(details, PortabilityDetails):
        return details.model_copy(update={"destination": None})
    return details


async def forget_subject(
    tx: Transaction, effects: Effects, key: bytes, subject_ref: str, request: Request | None
) -> str:
    """Reduce what privacyops keeps about the subject; the reduced reference.

    ``request``: the erasure request being answered, whose own row is saved after this
    (its in-memory copy is reduced too); its notices are already queued on ``effects``.
    """
    tenant, now = effects.tenant_id, effects.now.isoformat()
    ref = reduced_ref(key, subject_ref)
    for request_id, details in await tx.fetchall(
        "SELECT request_id, details FROM dsr_requests WHERE tenant_id = ? AND subject_ref = ?",
        (tenant, subject_ref),
    ):
        reduced = reduce_details(DETAILS.validate_json(details), key)
        effects.write(
            "UPDATE dsr_requests SET subject_ref = ?, details = ? WHERE tenant_id = ?"
            " AND request_id = ?",
            (ref, DETAILS.dump_json(reduced).decode(), tenant, request_id),
        )
    for note_id, value in await tx.fetchall(
        "SELECT id, requested_value FROM dsr_correction_notes WHERE tenant_id = ?"
        " AND subject_ref = ?",
        (tenant, subject_ref),
    ):
        effects.write(
            "UPDATE dsr_correction_notes SET subject_ref = ?, requested_value = ?"
            " WHERE tenant_id = ? AND id = ?",
            (ref, f"digest:{keyed_digest(key, str(value))[:32]}", tenant, note_id),
        )
    own = (tenant, subject_ref)
    effects.write(
        "UPDATE dsr_packages SET subject_ref = ?, expires_at = CASE WHEN expires_at < ?"
        " THEN expires_at ELSE ? END WHERE tenant_id = ? AND subject_ref = ?",
        (ref, now, now, *own),
    )
    effects.write("DELETE FROM processing_flags WHERE tenant_id = ? AND subject_ref = ?", own)
    effects.write("DELETE FROM restrictions WHERE tenant_id = ? AND subject_ref = ?", own)
    await _forget_notices(tx, effects, subject_ref, ref)
    if request is not None:
        request.subject_ref = ref
        request.details = reduce_details(request.details, key)
    effects.audit("subject_records_reduced", subject_ref, reference=ref)
    return ref


async def _forget_notices(tx: Transaction, effects: Effects, subject_ref: str, ref: str) -> None:
    tenant, now = effects.tenant_id, effects.now.isoformat()
    waiting = [n.notice_id for n in effects.notices if n.subject_ref == subject_ref]
    for notice_id, status in await tx.fetchall(NOTICES_OF_SUBJECT, (tenant, subject_ref)):
        if status in NOTICE_FINAL:
            effects.write(NOTICE_FORGET, (FORGOTTEN, ref, tenant, notice_id))
        else:
            waiting.append(str(notice_id))
    for notice_id in waiting:
        effects.write(FOLLOWUP_INSERT, (tenant, notice_id, ref, now))
