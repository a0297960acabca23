"""The consent rules as pure functions (docs/rules.md "Direct-marketing consent").

* Events may arrive late or twice: the newest ``occurred_at`` wins; an older event
  is kept in the history but changes nothing; on equal timestamps the more
  protective status wins (refused over withdrawn over granted).
* A grant that is not newer than a barrier changes nothing (``Outcome.BARRED``):
  a barrier is an opt-out kept as a suppression entry after an erasure (NCR reg
  58(4)) or an objection covering the purpose (POPIA s11(3)). A grant made after
  the barrier is a new consent and applies.
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
    BARRED = "barred"  # a grant not newer than a suppressed opt-out or an objection


@dataclass(frozen=True)
class Current:
    status: ConsentStatus
    effective_at: datetime


#: On equal timestamps the more protective status wins.
PROTECTION = {ConsentStatus.GRANTED: 0, ConsentStatus.WITHDRAWN: 1, ConsentStatus.REFUSED: 2}


def decide(
    status: ConsentStatus,
    occurred_at: datetime,
    current: Current | None,
    barrier: datetime | None = None,
) -> Outcome:
    """Newest occurred_at wins; a tie goes to the protective status; barriers hold grants."""
    if status is ConsentStatus.GRANTED and barrier is not None and occurred_at <= barrier:
        return Outcome.BARRED
    if current is None:
        return Outcome.APPLIED
    if occurred_at == current.effective_at:
        wins = PROTECTION[status] > PROTECTION[current.status]
    else:
        wins = occurred_at > current.effective_at
    if not wins:
        return Outcome.SUPERSEDED
    return Outcome.APPLIED if status is not current.status else Outcome.REAFFIRMED


def contactable(current: Current | None, barrier: datetime | None) -> bool:
    """A current grant, newer than every barrier on it, allows contact (POPIA s69(1))."""
    if current is None or current.status is not ConsentStatus.GRANTED:
        return False
    return barrier is None or current.effective_at > barrier


#: Channels whose change is confirmed to the subject on the same channel.
NOTIFIABLE = frozenset({Channel.EMAIL, Channel.SMS})


def notice_channel(channel: Channel) -> str | None:
    """Where the confirmation goes: the channel itself, else the subject's first channel."""
    return channel.value if channel in NOTIFIABLE else None
