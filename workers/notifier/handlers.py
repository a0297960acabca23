"""Notifier: tells each subject what a worker decided they must be told, once.

Rules served (docs/rules.md "Answers", "Security compromises", "Direct-marketing
consent"): the answer, extension, refusal and readiness notices of a data-subject
request (GDPR art 12(3)-(4); PAIA s57-s58; POPIA s23-25), the notice before a
restriction is lifted (POPIA s14(8)), the consent confirmation with the sender's
identity and an opt-out (POPIA s69(4)), and the security-compromise notice with
its four parts. Notices that must arrive complete (breach notices, POPIA
s22(4)-(5); final answers; extensions) go by e-mail or post, never cut down to
an SMS (``channel_order``); letters are written for the print run. The templates
carry the wording (``workers/notifier/templates``); this worker makes sure the
notice reaches the subject exactly once, through the transports
of ``infra/transports``.

Exactly once, step by step (the worker is not ``transactional``: the runtime
runs this handler outside the batch transaction, so each step below commits on
its own):

1. claim: in one transaction, check the notice is in this tenant's outbox and
   not ``sent``, then mark it ``sending`` with a lease of one handler timeout.
   A ``sent`` notice is skipped (a redelivery or a relay's second publish); a
   live lease means another copy is being sent: retry later (``NotYetKnown``).
2. read the notice from its own ``notification_outbox`` row (kind, channel,
   template context, and the sealed secrets, decrypted here with the notice
   key): ``notice.send`` carries references only. Resolve the address from
   ``contact_points`` now (never from the message), unless the row sealed one
   when the notice was queued (``SEALED_ADDRESS``: the old address told of a
   contact-point change); render, send through the provider with the notice_id
   as its idempotency key (SMTP ``Message-ID``, HTTP ``Idempotency-Key``, file name).
3. record ``sent``, clear the row's sealed secrets, and write the audit row in
   one transaction; then the runtime writes the inbox row and acks.

Why not the runtime's one transaction per batch: it would hold the store's
write lock for the whole SMTP session and could not commit ``sent`` before the
next notice; ``batch_max=1`` would fix only the second. See infra/runtime/consumer.py.

Crash windows: between the provider's acceptance and the ``sent`` commit a
crash leaves the notice ``sending``; the broker redelivers, the lease lapses and
the notice is sent again: at most one duplicate per crash, carrying the same
Message-ID (mail clients and MTAs can fold it) and the same Idempotency-Key (the
SMS gateway drops it). After ``sent`` commits nothing is sent again.

Failures: provider down or timing out -> ``ProviderUnavailable``, state
``retrying``, the runtime's retry tiers, and ``failed`` on the last attempt
(then the dead-letter queue). Permanent rejection (SMTP 5xx, HTTP 4xx, invalid
address), no contact point (reason ``no_contact``), missing template context or
an unknown tenant -> ``failed`` with the reason, then the dead-letter queue.
Reasons and logs name codes and references, never an address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog

from config import tenants as tenant_config
from config.settings import Settings
from infra import transports
from infra.keys import Keys, Sealer
from infra.redaction import describe_error
from infra.runtime.tables import load_notice
from infra.runtime.worker import SEALED_ADDRESS, Effects, Resources, Worker, announce, handles
from infra.store import Store
from infra.transports.base import (
    Email,
    EmailSender,
    Letter,
    LetterSender,
    Sms,
    SmsSender,
    message_id,
)
from messages.errors import (
    NoContact,
    NotYetKnown,
    PermanentError,
    PrivacyOpsError,
    RuleViolation,
)
from messages.notices import NoticeChannel, NoticeKind, NoticeSend
from workers.notifier import tables
from workers.notifier.rules import CONTACT_KIND, channel_order
from workers.notifier.tables import NOTIFIER
from workers.notifier.templates import Renderer
from workers.platform.tables import contact

log = structlog.get_logger("privacyops.notifier")


@dataclass(frozen=True)
class Rendering:
    """What a notice is rendered from: its outbox row, with the sealed secrets opened."""

    kind: NoticeKind
    channel: NoticeChannel | None
    context: dict[str, Any] = field(repr=False)
    address: str | None = field(repr=False)
    subject_ref: str


class NotifierWorker(Worker):
    """Sends ``notice.send`` messages by e-mail or SMS, once each."""

    name: ClassVar[str] = "notifier"
    schema = NOTIFIER
    transactional: ClassVar[bool] = False

    def __init__(
        self,
        settings: Settings,
        *,
        directory: tenant_config.TenantDirectory | None = None,
        email: EmailSender | None = None,
        sms: SmsSender | None = None,
        post: LetterSender | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory or tenant_config.from_settings(settings)
        self.renderer = Renderer()
        self._email = email or transports.email_sender(settings)
        self._sms = sms or transports.sms_sender(settings)
        self._post = post or transports.letter_sender(settings)
        self._store: Store | None = None
        self._sealer: Sealer | None = None

    async def open(self, resources: Resources) -> None:
        self._store = resources.store
        keys = resources.keys or Keys.from_settings(resources.settings)
        self._sealer = keys.notice

    async def close(self) -> None:
        senders: tuple[EmailSender | SmsSender | LetterSender, ...] = (
            self._post,
            self._sms,
            self._email,
        )
        for sender in senders:
            try:
                await sender.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest (STYLE 7)
                log.error("close_failed", resource=sender.transport, error_type=type(exc).__name__)

    @handles(NoticeSend)
    async def send(self, message: NoticeSend, effects: Effects) -> None:
        """Claim, send once through the provider, record the outcome (module docstring)."""
        store = self._opened()
        notice = message.payload
        notice_id = str(notice.notice_id)
        claim = await tables.claim(
            store, message.tenant_id, notice_id, effects.now, self.settings.handler_timeout_s
        )
        if claim is tables.Claim.UNKNOWN:
            raise RuleViolation("notice is not in this tenant's notification outbox")
        if claim is tables.Claim.BUSY:
            raise NotYetKnown("notice is being sent by another delivery; try later")
        if claim is tables.Claim.ALREADY_SENT:
            effects.audit("notice_already_sent", notice.subject_ref, notice_id=notice_id)
            return
        try:
            outcome = await self._deliver(message, await self._stored(message))
        except PrivacyOpsError as exc:
            await self._record(message, effects, self._failure(exc, effects.attempt))
            raise
        await self._record(message, effects, outcome)

    def _opened(self) -> Store:
        if self._store is None:
            raise RuntimeError("NotifierWorker.open was not called")
        return self._store

    def _failure(self, exc: PrivacyOpsError, attempt: int) -> tables.Outcome:
        final = isinstance(exc, PermanentError) or attempt >= self.settings.max_attempts
        status = "failed" if final else "retrying"
        return tables.Outcome(status, reason=exc.code, detail=describe_error(exc, 200))

    async def _record(self, message: NoticeSend, effects: Effects, outcome: tables.Outcome) -> None:
        """Commit the outcome with its audit row now; log the audit after the commit."""
        notice = message.payload
        own = Effects(worker=self.name, message=message, attempt=effects.attempt, now=effects.now)
        action = {"sent": "notice_sent", "failed": "notice_failed"}.get(
            outcome.status, "notice_deferred"
        )
        own.audit(
            action,
            notice.subject_ref,
            notice_id=str(notice.notice_id),
            kind=notice.kind.value,
            channel=outcome.channel,
            transport=outcome.transport,
            reason=outcome.reason,
        )
        await tables.record(self._opened(), own, str(notice.notice_id), outcome)
        announce(None, own)

    async def _stored(self, message: NoticeSend) -> Rendering:
        """The notice as its outbox row holds it, sealed secrets opened (never logged)."""
        notice_id = str(message.payload.notice_id)
        async with self._opened().transaction() as tx:
            stored = await load_notice(tx, message.tenant_id, notice_id)
        if stored is None:
            raise RuleViolation("notice is not in this tenant's notification outbox")
        secrets: dict[str, str] = {}
        if stored.sealed:
            if self._sealer is None:
                raise RuntimeError("NotifierWorker.open was not called")
            secrets = json.loads(self._sealer.open(stored.sealed))
        address = secrets.pop(SEALED_ADDRESS, None)
        channel = NoticeChannel(stored.channel) if stored.channel else None
        context = {**stored.context, **secrets}
        return Rendering(NoticeKind(stored.kind), channel, context, address, stored.subject_ref)

    async def _deliver(self, message: NoticeSend, notice: Rendering) -> tables.Outcome:
        tenant = self.directory.profile(message.tenant_id)
        if tenant is None:
            raise RuleViolation("tenant has no profile in the tenants file")
        channel, address = await self._address(message.tenant_id, notice)
        regulator = self.directory.regulator
        notice_id = str(message.payload.notice_id)
        if channel is NoticeChannel.EMAIL:
            rendered = self.renderer.email(notice.kind, tenant, regulator, notice.context)
            email = Email(
                notice_id=notice_id,
                sender_name=tenant.display_name,
                sender=tenant.sender_email,
                to=address,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                message_id=message_id(notice_id, tenant.sender_domain),
            )
            reference = await self._email.send(email)
            transport = self._email.transport
        elif channel is NoticeChannel.POST:
            rendered = self.renderer.email(notice.kind, tenant, regulator, notice.context)
            letter = Letter(
                notice_id,
                tenant.display_name,
                tenant.website,
                address,
                rendered.subject,
                rendered.text,
            )
            reference = await self._post.send(letter)
            transport = self._post.transport
        else:
            text = self.renderer.sms(notice.kind, tenant, regulator, notice.context)
            reference = await self._sms.send(Sms(notice_id, tenant.sms_sender_id, address, text))
            transport = self._sms.transport
        return tables.Outcome(
            "sent", channel=channel.value, transport=transport, provider_ref=reference
        )

    async def _address(self, tenant_id: str, notice: Rendering) -> tuple[NoticeChannel, str]:
        """The channel to use and the subject's address on it: sealed in the row, else read
        from the contact points now."""
        if notice.address is not None:
            if notice.channel is None:
                raise RuleViolation("a notice with a sealed address must name its channel")
            return notice.channel, notice.address
        order = channel_order(notice.kind, notice.channel)
        async with self._opened().transaction() as tx:
            for channel in order:
                address = await contact(tx, tenant_id, notice.subject_ref, CONTACT_KIND[channel])
                if address:
                    return channel, address
        wanted = " or ".join(c.value for c in order)
        raise NoContact(f"no {wanted} contact point for the subject")
