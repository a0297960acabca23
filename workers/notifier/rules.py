"""Where a notice may go: the notifier's pure rules (docs/rules.md "Answers", "Security
compromises"), shared with the workers that fix an address when they queue a notice.

* A notice that must reach the subject complete, in writing (``IN_WRITING``: a breach
  notice or update, POPIA s22(4)-(5); a final answer, what was done, kept and why; an
  extension with its reasons) goes by e-mail or post, never by SMS, which cannot carry
  it: post first when the subject asked for post.
* Any other notice goes on the channel asked for, else e-mail, then SMS.
"""

from __future__ import annotations

from collections.abc import Mapping

from messages.notices import NoticeChannel, NoticeKind

#: Kinds that must reach the subject complete, in writing (e-mail or post, never an SMS).
#: Their SMS text, where one is ever sent, only points to the written notice.
IN_WRITING = frozenset(
    {
        NoticeKind.BREACH_NOTICE,
        NoticeKind.BREACH_UPDATE,
        NoticeKind.DSR_COMPLETED,
        NoticeKind.DSR_REFUSED,
        NoticeKind.DSR_DEEMED_REFUSED,
        NoticeKind.DSR_EXTENDED,
    }
)

#: Channel order when a notice names none: e-mail first (it carries the full text).
FALLBACK_ORDER = (NoticeChannel.EMAIL, NoticeChannel.SMS)
#: Channel order of notices that must reach the subject in full, in writing.
WRITTEN_ORDER = (NoticeChannel.EMAIL, NoticeChannel.POST)

#: Notice channel -> contact_points.kind.
CONTACT_KIND = {
    NoticeChannel.EMAIL: "email",
    NoticeChannel.SMS: "phone",
    NoticeChannel.POST: "postal",
}


def channel_order(kind: NoticeKind, asked: NoticeChannel | None) -> tuple[NoticeChannel, ...]:
    """Where a notice may go, in order (module docstring)."""
    if kind in IN_WRITING:
        return WRITTEN_ORDER[::-1] if asked is NoticeChannel.POST else WRITTEN_ORDER
    return (asked,) if asked else FALLBACK_ORDER


def pick(
    kind: NoticeKind, asked: NoticeChannel | None, addresses: Mapping[NoticeChannel, str]
) -> tuple[NoticeChannel, str] | None:
    """The first channel the notice may go on that has an address, with that address."""
    for channel in channel_order(kind, asked):
        if addresses.get(channel):
            return channel, addresses[channel]
    return None
