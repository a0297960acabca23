"""What a round of steps adds up to: the request's answer once every source is done.

The outcome and the subject's answer wait for every data source (issue 13;
docs/rules.md "Answers"): access and portability answer with the package built
from every source, or are refused naming the source that refused the read;
rectification (POPIA s24; GDPR art 16, 19) merges each source's corrections;
erasure (POPIA s24, s14; GDPR art 17) merges what each source erased and kept,
tells the recipients (``subject.erased``) and answers what was done, kept and
why, naming any source whose step failed. A later round (a deferred erasure run
by the hold sweep) completes the request once nothing is held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.runtime.worker import Effects
from infra.store import Transaction
from messages.consent import Channel
from messages.dsr import RectificationDetails, SubjectErased, SubjectRectified
from workers.dsr import sweeps
from workers.dsr.erasure import ErasureResult
from workers.dsr.recipients import tell_recipients
from workers.dsr.requests import Request
from workers.dsr.rules import READING, Status

if TYPE_CHECKING:
    from workers.dsr.handlers import DsrWorker, Outcome
    from workers.dsr.steps import Step


async def answer_round(
    worker: DsrWorker,
    tx: Transaction,
    request: Request,
    round_: int,
    done: list[Step],
    effects: Effects,
) -> None:
    """Every step of the round is over: the request's answer (round 0) or the deferred
    erasure's (later rounds), from what each source's step did."""
    failed = [s for s in done if s.status == "failed"]
    why_failed = "; ".join(f"source {s.source}: {s.error}" for s in failed)
    subject = request.subject_ref
    assert subject is not None
    if request.kind in READING:
        if failed:
            outcome = {"refused": why_failed}
            await worker.complete(tx, request, (Status.REFUSED, outcome, why_failed), effects)
            return
        status, outcome, why = next(s.outcome for s in done if s.outcome)["answer"]
        await worker.complete(tx, request, (Status(status), outcome, why), effects)
        return
    if isinstance(request.details, RectificationDetails):
        await _answer_rectification(worker, tx, request, done, why_failed, effects)
        return
    result = ErasureResult(suppressed_channels=[c.value for c in Channel])
    for step in done:
        if step.status == "done" and step.outcome:
            result.merge(step.outcome)
    if result.erased:
        tell_recipients(
            effects,
            SubjectErased,
            worker.datamap,
            request.request_id,
            subject,
            list(result.erased),
            suppressed_channels=result.suppressed_channels,
        )
    if round_ > 0:
        await sweeps.deferred_done(worker, tx, request, result, effects)
        return
    summary: dict[str, Any] = result.summary()
    if failed:
        summary["not_erased"] = why_failed
        status = Status.PARTIALLY_COMPLETED if result.erased else Status.REFUSED
        await worker.complete(tx, request, (status, summary, why_failed), effects)
    elif result.complete:
        await worker.complete(
            tx, request, (Status.COMPLETED, summary, "all personal information erased"), effects
        )
    else:
        held = ", ".join(f"{t} ({h.name})" for t, h in sorted(result.held.items()))
        why = f"kept and restricted under retention duties: {held}"
        await worker.complete(tx, request, (Status.PARTIALLY_COMPLETED, summary, why), effects)


async def _answer_rectification(
    worker: DsrWorker,
    tx: Transaction,
    request: Request,
    done: list[Step],
    why_failed: str,
    effects: Effects,
) -> None:
    applied: list[str] = []
    refused: dict[str, str] = {}
    tables: set[str] = set()
    for step in done:
        if step.status == "done" and step.outcome:
            applied += step.outcome["applied"]
            refused.update(step.outcome["refused"])
            tables.update(step.outcome["tables"])
    assert isinstance(request.details, RectificationDetails)
    for correction in request.details.corrections:
        if correction.field not in applied and correction.field not in refused:
            refused[correction.field] = why_failed or "not applied"
    if applied and request.subject_ref is not None:
        tell_recipients(
            effects,
            SubjectRectified,
            worker.datamap,
            request.request_id,
            request.subject_ref,
            sorted(tables),
            applied,
        )
    outcome = {"applied": applied, "refused": refused}
    if not refused:
        result: Outcome = (Status.COMPLETED, outcome, "corrections made")
    elif applied:
        result = (Status.PARTIALLY_COMPLETED, outcome, "some corrections refused")
    else:
        result = (Status.REFUSED, outcome, "no correction could be made")
    await worker.complete(tx, request, result, effects)
