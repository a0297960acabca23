"""Reading dead letters without I/O: broker facts kept, masking, selection, JSON Lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from infra.dlq.admin import Target, replay_headers
from infra.dlq.codec import (
    H_DEAD_LETTERED_BY,
    H_PREVIOUS_ERROR_TYPE,
    H_REPLAYED_BY,
    H_REPLAYS,
    MASK,
    Selection,
    body_id,
    from_record,
    mask_body,
    parse,
    parse_since,
    to_record,
)
from infra.headers import (
    H_ATTEMPTS,
    H_ERROR,
    H_ERROR_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ROUTING_KEY,
)
from messages.names import Names
from messages.registry import encode
from tests.support.helpers import consent_changed

EMAIL, PHONE, SA_ID = "thandi.nkosi@example.co.za", "+27 82 555 0199", "8501015800084"
PLANTED = (EMAIL, PHONE, SA_ID, "82 555 0199")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def runtime_headers(**extra: object) -> dict[str, object]:
    return {
        H_ATTEMPTS: 4,
        H_ERROR_TYPE: "provider_unavailable",
        H_ERROR: "provider down",
        H_FIRST_FAILURE: "2025-03-01T11:00:00+00:00",
        H_LAST_FAILURE: "2025-03-01T11:30:00+00:00",
        H_ROUTING_KEY: "consent.changed",
        **extra,
    }


def test_runtime_dead_letter_is_read_from_our_headers() -> None:
    message = consent_changed("debtor-1", tenant_id="acme")
    letter = parse("consent", encode(message), runtime_headers(), {"message_id": "m-1"})
    # the envelope's id (upstream's), the AMQP property beside it (issue 14)
    assert (letter.id, letter.amqp_message_id) == (str(message.message_id), "m-1")
    assert (letter.type, letter.tenant, letter.subject_ref) == (
        "consent.changed",
        "acme",
        "debtor-1",
    )
    assert (letter.error_type, letter.attempts, letter.source) == (
        "provider_unavailable",
        4,
        "runtime",
    )
    assert letter.age(NOW) == timedelta(minutes=30)


def test_broker_dead_letter_facts_are_copied_into_our_headers() -> None:
    when = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    headers = {
        H_ERROR_TYPE: "provider_unavailable",  # from an earlier retry: history, not the cause
        "x-first-death-reason": "expired",
        "x-death": [
            {"reason": "delivery_limit", "queue": "ns.consent", "count": 1, "time": when,
             "routing-keys": ["consent.changed"]},
            {"reason": "expired", "queue": "ns.consent.retry.50ms", "count": 1, "time": when},
        ],
    }  # fmt: skip
    letter = parse("consent", b"{}", headers, {})
    assert letter.source == "broker"
    assert letter.error_type == "delivery_limit"
    assert letter.headers[H_PREVIOUS_ERROR_TYPE] == "provider_unavailable"
    assert letter.headers[H_ROUTING_KEY] == "consent.changed"
    assert letter.dead_at == when
    assert letter.id == body_id(b"{}")
    # read again (after a cycle the x-death may be gone on RabbitMQ 4): same facts
    again = parse("consent", b"{}", {k: v for k, v in letter.headers.items() if k != "x-death"}, {})
    assert (again.source, again.error_type, again.dead_at) == ("broker", "delivery_limit", when)


def test_retry_tier_expiry_alone_is_not_a_broker_dead_letter() -> None:
    headers = {"x-death": [{"reason": "expired", "queue": "ns.w.retry.50ms", "count": 1}]}
    assert parse("w", b"{}", headers, {}).source == "runtime"
    assert H_DEAD_LETTERED_BY not in parse("w", b"{}", headers, {}).headers


def test_masking_keeps_structure_and_hides_personal_data() -> None:
    body = json.loads(encode(consent_changed("debtor-1", reference=f"sms {PHONE}", wording=EMAIL)))
    body["payload"]["note"] = f"id {SA_ID}"
    body[SA_ID] = "key that is an id number"
    masked = mask_body(json.dumps(body).encode())
    text = json.dumps(masked)
    for planted in PLANTED:
        assert planted not in text
    assert masked["payload"]["subject_ref"] == "debtor-1"
    evidence = masked["payload"]["evidence"]
    assert (evidence["reference"], evidence["wording"], evidence["ip_address"]) == (
        MASK,
        MASK,
        None,
    )
    assert masked["payload"]["note"] == f"id {MASK}"
    assert masked["type"] == "consent.changed"
    assert masked["tenant_id"] == "acme"


def test_masking_a_body_that_is_not_json() -> None:
    body = f'{{"payload": {{"wording": "Thandi Nkosi", "phone": "x", "channel": "sms {EMAIL}'
    masked = mask_body(body.encode())
    assert isinstance(masked, str)
    assert "Thandi" not in masked
    assert EMAIL not in masked
    assert '"channel"' in masked


def test_selection() -> None:
    letter = parse("consent", encode(consent_changed(tenant_id="bravo")), runtime_headers(), {})
    assert Selection().everything
    assert Selection(type="consent.*", tenant="bravo").matches(letter)
    assert Selection(error="provider_unavailable").matches(letter)
    assert Selection(error="Provider Down").matches(letter)
    assert not Selection(error="invalid").matches(letter)
    assert not Selection(tenant="acme").matches(letter)
    assert Selection(since=parse_since("2025-03-01T11:29:00", NOW)).matches(letter)
    assert not Selection(since=parse_since("10m", NOW)).matches(letter)
    assert not Selection(ids=frozenset({"other"})).matches(letter)
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", NOW)


def test_records_round_trip_every_header_type() -> None:
    headers = {
        **runtime_headers(),
        "bytes": b"\x00\xff",
        "when": NOW,
        "money": Decimal("1.50"),
        "nested": [{"t": NOW}],
    }
    body = b"\x00 not json \xff"
    letter = parse("consent", body, headers, {"message_id": "m-1", "timestamp": NOW})
    record = from_record(to_record(letter), 1)
    assert (record.worker, record.body) == ("consent", body)
    assert record.headers == letter.headers
    assert record.properties == {"message_id": "m-1", "timestamp": NOW}
    with pytest.raises(ValueError, match="line 7"):
        from_record('{"worker": "w"}', 7)


def test_replay_resets_attempts_and_keeps_history() -> None:
    letter = parse("consent", b"{}", runtime_headers(**{H_REPLAYS: 2}), {})
    headers = replay_headers(letter, "alice", NOW)
    assert H_ATTEMPTS not in headers
    assert headers[H_REPLAYS] == 3
    assert headers[H_REPLAYED_BY] == "alice"
    assert headers[H_FIRST_FAILURE] == "2025-03-01T11:00:00+00:00"
    names = Names("ns")
    assert Target.parse(None).route(names, letter) == ("ns.internal", "consent")
    assert Target.parse("events").route(names, letter) == ("ns.events", "consent.changed")
    assert Target.parse("worker:other").route(names, letter) == ("ns.internal", "other")
    with pytest.raises(ValueError, match="--to"):
        Target.parse("queue:x")


def test_deep_json_is_read_as_text_never_walked() -> None:
    deep = b'{"message_id": "m-deep", "payload": ' + b"[" * 900 + b"]" * 900 + b"}"
    for body in (deep, b"[" * 50_000 + b"]" * 50_000):
        letter = parse("consent", body, {}, {"message_id": "amqp-1"})
        assert letter.id in ("m-deep", "amqp-1")
        assert isinstance(mask_body(body), str)
        json.dumps(to_record(letter))
    assert parse("consent", deep, {}, {}).id == "m-deep"  # best effort from the text
