"""Redaction and the logging pipeline, without the broker."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from infra import logging as plog
from infra.redaction import MASK, describe_error, redact, redact_text
from messages.errors import ProviderUnavailable


@pytest.mark.parametrize(
    "planted",
    [
        "thandi.nkosi@example.co.za",
        "+27 82 555 0199",
        "+27825550199",
        "082 555 0199",
        "0825550199",
        "8501015800084",
        "+44 20 7946 0958",
    ],
)
def test_shapes_are_masked_inside_text(planted: str) -> None:
    text = redact_text(f"failed for {planted} today")
    assert planted not in text
    assert text == f"failed for {MASK} today"


def test_opaque_references_and_ids_survive() -> None:
    for keep in ["debtor-7f3a9c", "3f2b8c1e-1234-4d5e-9f00-123456789012", "attempt 3 of 4"]:
        assert redact_text(keep) == keep


def test_sensitive_keys_are_replaced_whole() -> None:
    event = {"subject_ref": "debtor-1", "email": "x", "payload": {"a": 1}, "nested": {"phone": "1"}}
    assert redact(event) == {
        "subject_ref": "debtor-1",
        "email": MASK,
        "payload": MASK,
        "nested": {"phone": MASK},
    }


def test_describe_error_masks_and_cuts() -> None:
    error = ProviderUnavailable("smtp refused jane@example.com " + "x" * 600)
    text = describe_error(error)
    assert "jane@example.com" not in text
    assert len(text) == 500
    assert text.endswith("...")


def test_log_pipeline_redacts_fields_and_exceptions() -> None:
    stream = io.StringIO()
    plog.configure("info", "json", stream)
    log = structlog.get_logger("test")
    with structlog.contextvars.bound_contextvars(message_id="m-1", tenant="acme"):
        log.info("something_happened", note="reach me on +27 82 555 0199", email="a@b.co")
        try:
            raise ValueError("bad ID 8501015800084")
        except ValueError:
            log.exception("it_failed")
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert lines[0]["event"] == "something_happened"
    assert lines[0]["message_id"] == "m-1"
    assert lines[0]["tenant"] == "acme"
    assert lines[0]["note"] == f"reach me on {MASK}"
    assert lines[0]["email"] == MASK
    assert "ValueError" in lines[1]["exception"]
    for planted in ["+27 82 555 0199", "a@b.co", "8501015800084"]:
        assert planted not in output
    plog.configure("info", "json")


def test_console_rendering_when_asked() -> None:
    stream = io.StringIO()
    plog.configure("info", "console", stream)
    structlog.get_logger("test").info("hello", count=2)
    assert "hello" in stream.getvalue()
    assert not stream.getvalue().startswith("{")
    plog.configure("info", "json")


def test_digit_runs_inside_identifiers_survive() -> None:
    for keep in ["inc-a59fb10260944152", "bench1e30f865c8", "req-2026a123456789b"]:
        assert redact_text(keep) == keep
    assert redact_text("id 8501015800084, ref_8501015800084") == f"id {MASK}, ref_{MASK}"
