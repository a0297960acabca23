"""Marketing-consent worker: the current consent per tenant, subject and channel.

Rules enforced (shared/DOMAIN.md section 4):

* Electronic direct marketing needs consent per channel (POPIA s69(1), (3)):
  state is kept per (tenant, subject, channel), never across channels.
* Withdrawal is possible at any time and takes effect at once (GDPR art 7(3)):
  a withdrawal is applied in the batch it arrives in and published downstream
  as ``consent.updated`` so senders suppress the channel.
* Events may arrive late or twice (DOMAIN.md 4): the newest ``occurred_at``
  wins; an older event is kept in the history but changes nothing; on equal
  timestamps withdrawal wins. Duplicates are absorbed by the runtime's inbox.
* The history is the evidence (GDPR art 7(1)): every event is recorded with
  when, how (source) and the proof, including the ones that changed nothing.
  Opt-outs are kept for 3 years (NCR reg 58(4)); erasure never deletes them.
* Every change is confirmed to the subject through the notification outbox;
  the notice carries the sender's identity and an opt-out line (POPIA s69(4)),
  added by the notification templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import uuid4

from infra.errors import UnknownMessageType
from infra.platform import ALL, restricted_scopes
from infra.platform import SCHEMA as PLATFORM_SCHEMA
from infra.store import SqliteStore, Transaction
from infra.worker import Effects, Worker
from messages.consent import (
    Channel,
    ConsentChanged,
    ConsentStatus,
    ConsentUpdated,
    ConsentUpdatedPayload,
)
from messages.envelope import Envelope

SCHEMA = """
CREATE TABLE IF NOT EXISTS consent_state (
    tenant_id    TEXT NOT NULL,
    subject_ref  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn')),
    effective_at TEXT NOT NULL,
    source       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref, channel)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS consent_history (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    channel     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_history_subject
    ON consent_history (tenant_id, subject_ref, channel);
"""

HISTORY_INSERT = (
    "INSERT INTO consent_history (tenant_id, subject_ref, channel, purpose, status, source,"
    " evidence, occurred_at, message_id, outcome, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
STATE_UPSERT = (
    "INSERT INTO consent_state (tenant_id, subject_ref, channel, purpose, status, effective_at,"
    " source, message_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, subject_ref, channel) DO UPDATE SET purpose = excluded.purpose,"
    " status = excluded.status, effective_at = excluded.effective_at, source = excluded.source,"
    " message_id = excluded.message_id, updated_at = excluded.updated_at"
)
_KEYS_PER_QUERY = 300

Key = tuple[str, str, str]


class Outcome(StrEnum):
    APPLIED = "applied"  # the channel's status changed (or was first recorded)
    REAFFIRMED = "reaffirmed"  # newer event, same status: only the time moves
    SUPERSEDED = "superseded"  # older than the current state, or lost a tie: history only


@dataclass(frozen=True)
class Current:
    status: ConsentStatus
    effective_at: datetime


def decide(status: ConsentStatus, occurred_at: datetime, current: Current | None) -> Outcome:
    """Newest occurred_at wins; on equal timestamps withdrawal wins (DOMAIN.md 4)."""
    if current is None:
        return Outcome.APPLIED
    if occurred_at == current.effective_at:
        wins = status is ConsentStatus.WITHDRAWN and current.status is ConsentStatus.GRANTED
    else:
        wins = occurred_at > current.effective_at
    if not wins:
        return Outcome.SUPERSEDED
    return Outcome.APPLIED if status is not current.status else Outcome.REAFFIRMED


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


class ConsentWorker(Worker):
    """Applies ``consent.changed`` in the right order and keeps the history."""

    name: ClassVar[str] = "consent"
    handles: ClassVar[tuple[str, ...]] = ("consent.changed",)
    schema: ClassVar[str] = SCHEMA + PLATFORM_SCHEMA

    def __init__(self, confirm_changes: bool = True) -> None:
        #: False when a caller (an objection request) confirms to the subject itself.
        self.confirm_changes = confirm_changes
        self._current: dict[Key, Current] = {}

    async def prepare(self, tx: Transaction, messages: Sequence[Envelope]) -> None:
        """Load the current state of every (tenant, subject, channel) in the batch at once."""
        keys = sorted(
            {
                (m.tenant_id, m.payload.subject_ref, m.payload.channel.value)
                for m in messages
                if isinstance(m, ConsentChanged)
            }
        )
        self._current = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            values = ", ".join("(?, ?, ?)" for _ in chunk)
            rows = await tx.fetchall(
                f"WITH k(t, s, c) AS (VALUES {values}) "
                "SELECT cs.tenant_id, cs.subject_ref, cs.channel, cs.status, cs.effective_at "
                "FROM consent_state cs JOIN k ON cs.tenant_id = k.t AND cs.subject_ref = k.s "
                "AND cs.channel = k.c",
                [part for key in chunk for part in key],
            )
            for tenant, subject, channel, status, effective_at in rows:
                self._current[(tenant, subject, channel)] = Current(
                    ConsentStatus(status), datetime.fromisoformat(effective_at)
                )

    async def handle(self, message: Envelope, effects: Effects) -> None:
        if not isinstance(message, ConsentChanged):
            raise UnknownMessageType(f"consent worker does not handle {message.type}")
        change = message.payload
        key = (message.tenant_id, change.subject_ref, change.channel.value)
        current = self._current.get(key)
        outcome = decide(change.status, message.occurred_at, current)

        self._record_history(message, outcome, effects)
        if outcome is Outcome.SUPERSEDED:
            effects.audit(
                "consent_change_superseded",
                change.subject_ref,
                channel=change.channel,
                status=change.status,
            )
            return
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
            self._announce(message, current, effects)
        else:
            effects.audit(
                "consent_reaffirmed",
                change.subject_ref,
                channel=change.channel,
                status=change.status,
            )
        self._current[key] = Current(change.status, message.occurred_at)

    @staticmethod
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

    def _announce(self, message: ConsentChanged, current: Current | None, effects: Effects) -> None:
        """Audit, tell downstream senders, and confirm to the subject."""
        change = message.payload
        previous = current.status if current else None
        effects.audit(
            "consent_applied",
            change.subject_ref,
            channel=change.channel,
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
        if not self.confirm_changes:
            return
        notice_channel = change.channel.value if change.channel in _NOTIFIABLE else None
        effects.notify(
            change.subject_ref,
            "consent_confirmation",
            notice_channel,
            {
                "channel": change.channel.value,
                "purpose": change.purpose,
                "status": change.status.value,
                "effective_at": _iso(message.occurred_at),
            },
        )


_NOTIFIABLE = frozenset({Channel.EMAIL, Channel.SMS})


async def is_contactable(
    store: SqliteStore, tenant_id: str, subject_ref: str, channel: Channel | str
) -> bool:
    """Suppression check: may this tenant market to this subject on this channel now?

    Only a recorded, current grant allows contact (POPIA s69(1)); no record or a
    withdrawal means no, and so does a restriction of the subject's processing
    (POPIA s14(6): restricted data is storage-only).
    """
    async with store.transaction() as tx:
        if await restricted_scopes(tx, tenant_id, subject_ref) & {ALL, "consent", "contact"}:
            return False
        row = await tx.fetchone(
            "SELECT status FROM consent_state WHERE tenant_id = ? AND subject_ref = ?"
            " AND channel = ?",
            (tenant_id, subject_ref, Channel(channel).value),
        )
    return row is not None and row[0] == ConsentStatus.GRANTED.value
