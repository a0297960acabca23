"""Telling the recipients of a subject's data what changed (POPIA s24(3); GDPR art 17(2), 19, 21).

Erasure, rectification, restriction and its lifting, and objections each reach every
recipient the data map names for the tables concerned, as an outbound event.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from config.datamap import DataMap
from infra.runtime.worker import Effects
from messages.dsr import (
    SubjectChangedPayload,
    SubjectErased,
    SubjectErasedPayload,
    SubjectObjected,
    SubjectObjectedPayload,
    SubjectRectified,
    SubjectRestricted,
    SubjectRestrictedPayload,
    SubjectRestrictionLifted,
    SubjectRestrictionLiftedPayload,
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


def tell_restricted(
    effects: Effects,
    datamap: DataMap,
    subject_ref: str,
    scopes: list[str],
    grounds: str,
    *,
    request_id: str | None,
    until: date | None = None,
) -> None:
    """``subject.restricted``: recipients may only store the data now (GDPR art 18, 19)."""
    tables = sorted({t for scope in scopes for t in datamap.tables_in(scope)})
    effects.emit(
        SubjectRestricted(
            tenant_id=effects.tenant_id,
            correlation_id=request_id,
            payload=SubjectRestrictedPayload(
                request_id=request_id,
                subject_ref=subject_ref,
                scopes=sorted(scopes),
                tables=tables,
                grounds=grounds,
                until=until,
                recipients=datamap.recipients(tables),
            ),
        )
    )


def tell_lifted(effects: Effects, datamap: DataMap, subject_ref: str, scopes: list[str]) -> None:
    """``subject.restriction_lifted``: after the subject was told (POPIA s14(8); art 19)."""
    tables = sorted({t for scope in scopes for t in datamap.tables_in(scope)})
    effects.emit(
        SubjectRestrictionLifted(
            tenant_id=effects.tenant_id,
            payload=SubjectRestrictionLiftedPayload(
                subject_ref=subject_ref,
                scopes=sorted(scopes),
                tables=tables,
                recipients=datamap.recipients(tables),
            ),
        )
    )


def tell_objected(
    effects: Effects,
    datamap: DataMap,
    request_id: str,
    subject_ref: str,
    outcomes: dict[str, str],
    since: datetime,
) -> None:
    """``subject.objected``: every recipient stops the purposes objected to (s11(3); art 21)."""
    effects.emit(
        SubjectObjected(
            tenant_id=effects.tenant_id,
            correlation_id=request_id,
            payload=SubjectObjectedPayload(
                request_id=request_id,
                subject_ref=subject_ref,
                outcomes=outcomes,
                since=since,
                recipients=datamap.recipients(),
            ),
        )
    )
