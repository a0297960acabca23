"""Where a notice may go (``workers/notifier/rules.py``; docs/rules.md "Answers",
"Security compromises"), without I/O."""

from __future__ import annotations

import pytest

from messages.notices import NoticeChannel, NoticeKind
from workers.notifier.rules import IN_WRITING, channel_order, pick

EMAIL, SMS, POST = NoticeChannel.EMAIL, NoticeChannel.SMS, NoticeChannel.POST


@pytest.mark.parametrize("kind", sorted(IN_WRITING))
def test_a_notice_in_writing_never_goes_by_sms(kind: NoticeKind) -> None:
    assert channel_order(kind, SMS) == (EMAIL, POST)
    assert channel_order(kind, None) == (EMAIL, POST)
    assert channel_order(kind, POST) == (POST, EMAIL)  # post first when asked for
    assert pick(kind, SMS, {SMS: "+27 82 555 0199"}) is None


def test_any_other_notice_goes_where_asked_else_email_then_sms() -> None:
    kind = NoticeKind.CONSENT_CONFIRMATION
    assert channel_order(kind, SMS) == (SMS,)
    assert channel_order(kind, None) == (EMAIL, SMS)
    assert pick(kind, None, {SMS: "+27 82 555 0199"}) == (SMS, "+27 82 555 0199")
    assert pick(kind, SMS, {EMAIL: "a@example.co.za"}) is None


def test_the_first_channel_with_an_address_wins() -> None:
    addresses = {EMAIL: "", SMS: "+27 82 555 0199", POST: "1 Main Rd"}
    assert pick(NoticeKind.BREACH_NOTICE, None, addresses) == (POST, "1 Main Rd")
    assert pick(NoticeKind.DSR_PACKAGE_READY, None, addresses) == (SMS, "+27 82 555 0199")
