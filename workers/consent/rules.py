"""The consent rules as pure functions (DOMAIN.md section 4; tested in tests/workers/consent).

* Events may arrive late or twice: the newest ``occurred_at`` wins; an older event
  is kept in the history but changes nothing; on equal timestamps withdrawal wins.
* Only e-mail and SMS consents are confirmed to the subject by a notice: the
  other channels have no notice channel of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from messages.consent import Channel, ConsentStatus


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


#: Channels whose change is confirmed to the subject on the same channel.
NOTIFIABLE = frozenset({Channel.EMAIL, Channel.SMS})


def notice_channel(channel: Channel) -> str | None:
    """Where the confirmation goes: the channel itself, else the subject's first channel."""
    return channel.value if channel in NOTIFIABLE else None
