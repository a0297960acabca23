"""Marketing-consent worker: the current consent per tenant, subject and channel.

Rules enforced (docs/rules.md "Direct-marketing consent"; pure rules in
``workers/consent/rules.py``):

* Electronic direct marketing needs consent per channel and per purpose (POPIA
  s69(1), (3)): state is kept per (tenant, subject, channel, purpose), never
  across channels or purposes; which purposes are marketing is said in
  ``messages.consent`` (every purpose but the service purposes).
* A person who refused when asked is recorded as ``refused``, not
  ``withdrawn`` (POPIA s69(2)(a)): senders may never ask them again
  (``workers.consent.tables.may_ask``).
* An opt-out outlives an erasure (NCR reg 58(4)) and an objection covers its
  purposes (POPIA s11(3)): a grant not newer than either is recorded as
  ``barred`` and changes nothing (``workers.platform.optouts``).
* Withdrawal is possible at any time and takes effect at once (GDPR art 7(3)):
  a withdrawal is applied in the batch it arrives in and published downstream
  as ``consent.updated`` so senders suppress the channel.
* Events may arrive late or twice: the newest ``occurred_at``
  wins; an older event is kept in the history but changes nothing; on equal
  timestamps withdrawal wins. Duplicates are absorbed by the runtime's inbox.
* The history is the evidence (GDPR art 7(1)): every event is recorded with
  when, how (source) and the proof, including the ones that changed nothing.
  Opt-outs are kept for 3 years (NCR reg 58(4)); erasure never deletes them.
* Every change is confirmed to the subject through the notification outbox;
  the notice carries the sender's identity and an opt-out line (POPIA s69(4)),
  added by the notification templates.

``apply`` is the rule as a function, so that another worker (an objection to
direct marketing, POPIA s11(3)) withdraws consent exactly as this one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar
from uuid import uuid4

from config.settings import Settings
from infra.runtime.worker import Effects, Resources, Worker, handles
from infra.store import Transaction
from messages.consent import (
    ConsentChanged,
    ConsentStatus,
    ConsentUpdated,
    ConsentUpdatedPayload,
)
from messages.envelope import Envelope
from workers.consent.rules import Current, Outcome, decide, notice_channel
from workers.consent.tables import (
    CONSENT,
    HISTORY_INSERT,
    STATE_UPSERT,
    Key,
    current_states,
)
from workers.platform.keys import digest_key
from workers.platform.optouts import barriers, still_dated


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def key_of(message: ConsentChanged) -> Key:
    p = message.payload
    return (message.tenant_id, p.subject_ref, p.channel.value, p.purpose)


def apply(
    effects: Effects,
    message: ConsentChanged,
    current: Current | None,
    *,
    confirm: bool,
    barrier: datetime | None = None,
) -> Current | None:
    """Record the change in the history and, when it wins, as the state; the state after.

    ``confirm``: queue the confirmation notice for the subject (False when the caller,
    such as an objection request, answers the subject itself). ``barrier``: the latest
    suppressed opt-out or objection covering the channel and purpose.
    """
    change = message.payload
    outcome = decide(change.status, message.occurred_at, current, barrier)
    _record_history(message, outcome, effects)
    if outcome in (Outcome.SUPERSEDED, Outcome.BARRED):
        effects.audit(
            "consent_change_barred" if outcome is Outcome.BARRED else "consent_change_superseded",
            change.subject_ref,
            channel=change.channel,
            purpose=change.purpose,
            status=change.status,
        )
        return current
    effects.write(
        STATE_UPSERT,
        (
            message.tenant_id,
            change.subject_ref,
            change.channel.value,
            change.purpose,
            change.status.value,
            _iso(message.occurred_at),
            change.source.value,
            str(message.message_id),
            _iso(effects.now),
        ),
    )
    if outcome is Outcome.APPLIED:
        _announce(message, current, effects, confirm)
    else:
        effects.audit(
            "consent_reaffirmed",
            change.subject_ref,
            channel=change.channel,
            purpose=change.purpose,
            status=change.status,
        )
    return Current(change.status, message.occurred_at)


def _record_history(message: ConsentChanged, outcome: Outcome, effects: Effects) -> None:
    change = message.payload
    effects.write(
        HISTORY_INSERT,
        (
            message.tenant_id,
            change.subject_ref,
            change.channel.value,
            change.purpose,
            change.status.value,
            change.source.value,
            change.evidence.model_dump_json(),
            _iso(message.occurred_at),
            str(message.message_id),
            outcome.value,
            _iso(effects.now),
        ),
    )


def _announce(
    message: ConsentChanged, current: Current | None, effects: Effects, confirm: bool
) -> None:
    """Audit, tell downstream senders, and confirm to the subject."""
    change = message.payload
    previous = current.status if current else None
    effects.audit(
        "consent_applied",
        change.subject_ref,
        channel=change.channel,
        purpose=change.purpose,
        status=change.status,
        previous_status=previous,
        source=change.source,
    )
    # Every field comes from the validated message, so the event is built without
    # validating it again (about a fifth of the handler's time); tests decode it.
    effects.emit(
        ConsentUpdated.model_construct(
            message_id=uuid4(),
            tenant_id=message.tenant_id,
            occurred_at=effects.now,
            correlation_id=message.correlation_id or str(message.message_id),
            payload=ConsentUpdatedPayload.model_construct(
                subject_ref=change.subject_ref,
                channel=change.channel,
                purpose=change.purpose,
                status=change.status,
                previous_status=previous,
                effective_at=message.occurred_at,
                source=change.source,
                cause_message_id=message.message_id,
            ),
        )
    )
    if not confirm:
        return
    effects.notify(
        change.subject_ref,
        "consent_confirmation",
        notice_channel(change.channel),
        {
            "channel": change.channel.value,
            "purpose": change.purpose,
            "status": change.status.value,
            "effective_at": _iso(message.occurred_at),
        },
    )


class ConsentWorker(Worker):
    """Applies ``consent.changed`` in the right order and keeps the history."""

    name: ClassVar[str] = "consent"
    schema = CONSENT

    def __init__(self, settings: Settings | None = None) -> None:
        self._current: dict[Key, Current] = {}
        self._barriers: dict[Key, datetime] = {}
        self._key: bytes | None = None

    async def open(self, resources: Resources) -> None:
        """The key of the suppression digests (shared with the DSR worker's erasure)."""
        self._key = digest_key(resources.settings, resources.keys)

    async def prepare(self, tx: Transaction, messages: Sequence[Envelope]) -> None:
        """Load the batch's current states, and the barriers of its grants, at once."""
        changes = [m for m in messages if isinstance(m, ConsentChanged)]
        self._current = await current_states(tx, [key_of(m) for m in changes])
        grants = [key_of(m) for m in changes if m.payload.status is ConsentStatus.GRANTED]
        self._barriers = {}
        if grants:
            if self._key is None:
                raise RuntimeError("ConsentWorker.open was not called")
            self._barriers = await barriers(tx, self._key, grants, still_dated())

    @handles(ConsentChanged)
    async def changed(self, message: ConsentChanged, effects: Effects) -> None:
        """POPIA s69, GDPR art 7(3): newest wins, the protective status wins a tie, history kept;
        NCR reg 58(4), POPIA s11(3): a grant older than a kept opt-out changes nothing."""
        key = key_of(message)
        barrier = self._barriers.get(key)
        after = apply(effects, message, self._current.get(key), confirm=True, barrier=barrier)
        if after is not None:
            self._current[key] = after
