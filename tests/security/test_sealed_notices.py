"""The sealed notice context (``Effects.notify(..., sealed=...)``), without the broker.

End to end (sealed in the row, opened only by the notifier, cleared once sent, never in
``notice.send``) it is tested in test_at_rest.py and test_publishers.py.
"""

from __future__ import annotations

import json

import pytest

from config.settings import Settings
from infra.keys import Keys
from infra.runtime.tables import NOTICE_INSERT
from infra.runtime.worker import SEALED_ADDRESS, Effects


def test_sealed_values_are_encrypted_into_the_row_and_never_in_the_context(
    secured: Settings,
) -> None:
    sealer = Keys.from_settings(secured).notice
    effects = Effects.standalone("dsr", "acme", sealer=sealer)
    effects.notify(
        "debtor-1",
        "contact_changed",
        "email",
        {"contact_kind": "e-mail address"},
        sealed={SEALED_ADDRESS: "old@example.com", "token": "code-123"},
    )
    [(sql, params)] = effects.writes
    assert sql == NOTICE_INSERT
    context, sealed = params[5], params[8]
    assert "old@example.com" not in context
    assert "old@example.com" not in sealed
    assert "code-123" not in sealed
    assert json.loads(sealer.open(sealed)) == {"address": "old@example.com", "token": "code-123"}
    [notice] = effects.notices
    assert "old@example.com" not in repr(notice)


def test_sealing_without_a_key_is_a_programming_error() -> None:
    effects = Effects.standalone("dsr", "acme")
    with pytest.raises(RuntimeError, match="sealer"):
        effects.notify("debtor-1", "dsr_package_ready", None, {}, sealed={"token": "x"})
    effects.notify("debtor-1", "dsr_completed", None, {"request_id": "r"})  # nothing sealed
