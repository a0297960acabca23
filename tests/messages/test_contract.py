"""The wire contract: envelope rules, decoding errors, generated schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from messages import ConsentChanged, decode, encode
from messages.errors import InvalidMessage, UndecodableMessage, UnknownMessageType
from messages.schema import asyncapi, json_schemas, render
from tests.support.helpers import consent_changed

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_round_trip() -> None:
    message = consent_changed()
    assert decode(encode(message)) == message


def test_occurred_at_is_stored_as_utc() -> None:
    local = datetime(2026, 1, 15, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    message = consent_changed(occurred_at=local)
    assert message.occurred_at == datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    assert message.occurred_at.utcoffset() == timedelta(0)


def test_naive_timestamp_is_rejected() -> None:
    body = json.loads(encode(consent_changed()))
    body["occurred_at"] = "2026-01-15T10:00:00"
    with pytest.raises(InvalidMessage, match="occurred_at"):
        decode(json.dumps(body).encode())


def test_future_timestamp_is_rejected() -> None:
    with pytest.raises(ValidationError, match="future"):
        consent_changed(occurred_at=datetime.now(UTC) + timedelta(hours=1))


def test_models_are_frozen() -> None:
    message = consent_changed()
    with pytest.raises(ValidationError):
        message.tenant_id = "other"  # type: ignore[misc]


def test_extra_fields_are_forbidden() -> None:
    body = json.loads(encode(consent_changed()))
    body["payload"]["thandi@example.co.za"] = "blue"
    with pytest.raises(InvalidMessage, match=r"payload\.\(unknown field\): Extra inputs") as raised:
        decode(json.dumps(body).encode())
    assert "thandi" not in str(raised.value)  # a key the sender chose is never echoed


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        (b"{not json", UndecodableMessage, "not a JSON object"),
        (b"\xff\xfe\x00", UndecodableMessage, "not a JSON object"),
        (b"[1, 2]", UndecodableMessage, "not a JSON object"),
        (b'{"type": "consent.revoked"}', UnknownMessageType, "no contract for this type"),
        (b'{"tenant_id": "acme"}', InvalidMessage, "type: field required"),
    ],
)
def test_decode_errors_are_permanent_and_readable(body: bytes, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        decode(body)


def test_missing_field_is_named() -> None:
    body = json.loads(encode(consent_changed()))
    del body["payload"]["channel"]
    with pytest.raises(InvalidMessage, match=r"payload\.channel: Field required"):
        decode(json.dumps(body).encode())


@pytest.mark.parametrize("tenant", ["", "A", "Bad Tenant!", "x" * 80, "-lead"])
def test_invalid_tenant(tenant: str) -> None:
    body = json.loads(encode(consent_changed()))
    body["tenant_id"] = tenant
    with pytest.raises(InvalidMessage, match="tenant_id"):
        decode(json.dumps(body).encode())


@pytest.mark.parametrize(
    "subject_ref", ["jane@example.com", "+27821234567", "8001015009087", "0821234567", "a b"]
)
def test_subject_ref_must_be_opaque(subject_ref: str) -> None:
    body = json.loads(encode(consent_changed()))
    body["payload"]["subject_ref"] = subject_ref
    with pytest.raises(InvalidMessage) as caught:
        decode(json.dumps(body).encode())
    assert subject_ref not in str(caught.value)


def test_errors_never_echo_values() -> None:
    body = json.loads(encode(consent_changed()))
    body["payload"]["channel"] = "jane@example.com"
    body["payload"]["evidence"]["ip_address"] = "+27 82 123 4567"
    body["jane.doe@example.com"] = 1
    with pytest.raises(InvalidMessage) as caught:
        decode(json.dumps(body).encode())
    text = str(caught.value)
    assert "example.com" not in text
    assert "123 4567" not in text


def test_version_is_pinned() -> None:
    body = json.loads(encode(consent_changed()))
    body["version"] = 2
    with pytest.raises(InvalidMessage, match="version"):
        decode(json.dumps(body).encode())


def test_asyncapi_document_is_current() -> None:
    committed = (DOCS / "asyncapi.json").read_text()
    assert committed == render(asyncapi()), "docs/asyncapi.json is stale: run privacyops schema"


def test_json_schemas_are_current() -> None:
    for name, schema in json_schemas().items():
        committed = (DOCS / "schemas" / f"{name}.json").read_text()
        assert committed == render(schema), f"docs/schemas/{name}.json is stale"


def test_asyncapi_covers_every_type() -> None:
    document = asyncapi()
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses >= {
        "consent.changed",
        "consent.updated",
        "dsr.requested",
        "dsr.verified",
        "dsr.extended",
        "subject.rectified",
        "subject.erased",
        "dsr.overdue",
        "notice.send",
        "security.alert",
        "incident.opened",
        "incident.updated",
        "incident.compromise",
        "incident.escalated",
        "account.lock",
    }
    assert "ConsentChanged" in document["components"]["schemas"]
    actions = {op["action"] for op in document["operations"].values()}
    assert actions == {"receive", "send"}


def test_schema_accepts_what_the_model_accepts() -> None:
    schema = ConsentChanged.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"tenant_id", "payload"}


@pytest.mark.parametrize("field", ["message_id", "occurred_at", "version"])
def test_wire_messages_carry_id_time_and_version(field: str) -> None:
    body = json.loads(encode(consent_changed()))
    del body[field]
    with pytest.raises(InvalidMessage, match=f"missing on the wire: {field}"):
        decode(json.dumps(body).encode())


def test_schema_requires_what_decoding_requires() -> None:
    required = ConsentChanged.model_json_schema()["required"]
    assert set(required) >= {"message_id", "occurred_at", "type", "version", "tenant_id"}
