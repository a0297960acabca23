"""Notices on their way from the notification outbox to the notifier.

Workers decide *that* a subject is told (``Effects.notify`` writes a row to
``notification_outbox`` in the same transaction as the effect); the outbox
relay (``infra/runtime/outbox.py``) publishes each committed row as a
``notice.send`` message, and the worker that handles it (the notifier) makes
sure the subject *is* told, once.

``notice.send`` is internal: only privacyops publishes it, on the internal
direct exchange with routing key ``notice.send``; it is never bound to the
public events exchange. Its ``message_id`` is the
notice's ``notice_id``, so a republished notice is the same message to the
runtime's inbox. It carries references only: the worker that sends the notice
renders it from its own ``notification_outbox`` row (the template context, and
the *sealed* secrets such as a download code, encrypted in the row and cleared
once sent), so no secret or contact detail ever travels in a message.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field

from messages.envelope import Envelope, Frozen, SubjectRef


class NoticeKind(StrEnum):
    """One template per kind (workers/notifier/templates/<kind>.txt and .html)."""

    DSR_RECEIVED = "dsr_received"
    DSR_VERIFICATION_NEEDED = "dsr_verification_needed"
    DSR_EXTENDED = "dsr_extended"
    DSR_COMPLETED = "dsr_completed"
    DSR_REFUSED = "dsr_refused"
    DSR_DEEMED_REFUSED = "dsr_deemed_refused"
    DSR_PACKAGE_READY = "dsr_package_ready"
    RESTRICTION_LIFTING = "restriction_lifting"
    CONSENT_CONFIRMATION = "consent_confirmation"
    BREACH_NOTICE = "breach_notice"
    BREACH_UPDATE = "breach_update"
    CONTACT_CHANGED = "contact_changed"


class NoticeChannel(StrEnum):
    """``post``: a letter to the subject's postal address (written for the print run)."""

    EMAIL = "email"
    SMS = "sms"
    POST = "post"


class NoticeSendPayload(Frozen):
    notice_id: UUID = Field(description="The notification_outbox row; the dedupe key.")
    subject_ref: SubjectRef
    kind: NoticeKind
    channel: NoticeChannel | None = Field(
        None,
        description="None: the subject's first available channel (e-mail, then SMS; for "
        "notices that must be in writing, e-mail then post).",
    )


class NoticeSend(Envelope):
    """Internal: send one committed notice to its subject (relay to notifier)."""

    type: Literal["notice.send"] = "notice.send"
    version: Literal[1] = 1
    payload: NoticeSendPayload


INBOUND: tuple[type[Envelope], ...] = ()
OUTBOUND: tuple[type[Envelope], ...] = ()
#: Published and consumed by privacyops itself (see messages.registry).
INTERNAL: tuple[type[Envelope], ...] = (NoticeSend,)
