"""Telling the recipients of a subject's data what changed (POPIA s24(3); GDPR art 17(2), 19)."""

from __future__ import annotations

from typing import Any

from config.datamap import DataMap
from infra.runtime.worker import Effects
from messages.dsr import (
    SubjectChangedPayload,
    SubjectErased,
    SubjectErasedPayload,
    SubjectRectified,
)

PAYLOADS: dict[type[SubjectErased | SubjectRectified], type[SubjectChangedPayload]] = {
    SubjectErased: SubjectErasedPayload,
    SubjectRectified: SubjectChangedPayload,
}


def tell_recipients(
    effects: Effects,
    event: type[SubjectErased | SubjectRectified],
    datamap: DataMap,
    request_id: str,
    subject_ref: str,
    tables: list[str],
    fields: list[str] | None = None,
    **extra: Any,
) -> None:
    """Publish ``subject.erased`` or ``subject.rectified`` naming tables, fields and recipients."""
    payload = PAYLOADS[event](
        request_id=request_id,
        subject_ref=subject_ref,
        tables=sorted(tables),
        fields=fields or [],
        recipients=datamap.recipients(tables),
        **extra,
    )
    effects.emit(
        event.model_validate(
            {"tenant_id": effects.tenant_id, "correlation_id": request_id, "payload": payload}
        )
    )
