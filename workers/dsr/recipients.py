"""Telling the recipients of a subject's data what changed (POPIA s24(3); GDPR art 17(2), 19)."""

from __future__ import annotations

from config.datamap import DataMap
from infra.runtime.worker import Effects
from messages.dsr import SubjectChangedPayload, SubjectErased, SubjectRectified


def tell_recipients(
    effects: Effects,
    event: type[SubjectErased | SubjectRectified],
    datamap: DataMap,
    request_id: str,
    subject_ref: str,
    tables: list[str],
    fields: list[str] | None = None,
) -> None:
    """Publish ``subject.erased`` or ``subject.rectified`` naming tables, fields and recipients."""
    effects.emit(
        event(
            tenant_id=effects.tenant_id,
            correlation_id=request_id,
            payload=SubjectChangedPayload(
                request_id=request_id,
                subject_ref=subject_ref,
                tables=sorted(tables),
                fields=fields or [],
                recipients=datamap.recipients(tables),
            ),
        )
    )
