"""Where a request's answers go, fixed when the request arrives (docs/rules.md "Answers").

An answer must reach the subject even when the request itself removes the address:
an erasure deletes the contact points in the transaction that queues its final
answer, and a deferred erasure does the same when its hold expires. So the worker
keeps, with the request, the subject's addresses as they were when it arrived (the
subject's contact points; when no subject is found, the e-mail address the request
gave), sealed with the notice key. Every notice of the request is queued with its
address sealed in the outbox row (``Effects.notify(..., sealed={"address": ...})``):
the contact point as it is at that moment, else the kept copy. The kept copy is
dropped once the request is answered for good (completed or refused); the notice
drops its own copy when it is sent.
"""

from __future__ import annotations

import json
from typing import Any

from infra.keys import Sealer
from infra.runtime.worker import SEALED_ADDRESS, Effects
from infra.store import Transaction
from messages.notices import NoticeChannel, NoticeKind
from workers.dsr.requests import Request
from workers.dsr.rules import Status
from workers.notifier.rules import CONTACT_KIND, pick
from workers.platform.tables import contact

#: A request in one of these states is answered for good: its kept addresses go.
ANSWERED = frozenset({Status.COMPLETED, Status.REFUSED})


async def current(
    tx: Transaction, tenant_id: str, subject_ref: str | None
) -> dict[NoticeChannel, str]:
    """The subject's contact point per notice channel, as the store holds them now."""
    found: dict[NoticeChannel, str] = {}
    if subject_ref is None:
        return found
    for channel, kind in CONTACT_KIND.items():
        address = await contact(tx, tenant_id, subject_ref, kind)
        if address:
            found[channel] = address
    return found


async def fix(
    tx: Transaction, request: Request, sealer: Sealer, given_email: str | None = None
) -> None:
    """On arrival: keep the subject's addresses (or the e-mail the request gave) with it."""
    addresses = await current(tx, request.tenant_id, request.subject_ref)
    if not addresses and given_email:
        addresses = {NoticeChannel.EMAIL: given_email}
    request.addresses = addresses
    request.reply_addresses = _seal(sealer, addresses)


async def refresh(tx: Transaction, request: Request, sealer: Sealer) -> None:
    """Later: the contact points as they are now, over the copy kept at arrival."""
    kept = _open(sealer, request.reply_addresses)
    request.addresses = {**kept, **await current(tx, request.tenant_id, request.subject_ref)}


def kept(request: Request, sealer: Sealer) -> dict[NoticeChannel, str]:
    """The addresses kept with the request when it arrived (its contact source is down)."""
    return _open(sealer, request.reply_addresses)


def notify(
    effects: Effects,
    request: Request,
    kind: str,
    context: dict[str, Any],
    *,
    sealed: dict[str, str] | None = None,
) -> str:
    """Queue a notice of the request, its address sealed in the row; the notice_id.

    The channel follows the notifier's rules (``workers.notifier.rules.channel_order``:
    a final answer goes in writing). With no address on any allowed channel, the notice
    is queued without one and the notifier looks again when it sends.
    """
    subject = request.subject_ref or f"request:{request.request_id}"
    asked = NoticeChannel(request.reply_channel)
    picked = pick(NoticeKind(kind), asked, request.addresses)
    secrets = dict(sealed or {})
    channel = request.reply_channel
    if picked is not None:
        channel, secrets[SEALED_ADDRESS] = picked[0].value, picked[1]
    notice_id = effects.notify(
        subject,
        kind,
        channel,
        {"request_id": request.request_id, "kind": request.kind.value, **context},
        sealed=secrets or None,
    )
    if request.status in ANSWERED:
        request.reply_addresses = None  # the notice carries its own sealed copy
    return notice_id


def _seal(sealer: Sealer, addresses: dict[NoticeChannel, str]) -> str | None:
    if not addresses:
        return None
    return sealer.seal(json.dumps({c.value: a for c, a in addresses.items()}).encode())


def _open(sealer: Sealer, sealed: str | None) -> dict[NoticeChannel, str]:
    if not sealed:
        return {}
    return {NoticeChannel(c): a for c, a in json.loads(sealer.open(sealed)).items()}
