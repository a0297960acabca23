"""Issue 14: the dead-letter tools read any body, headers and properties without crashing.

Hypothesis drives what ``dlq list``, ``show`` (masked and revealed), ``replay`` (its
headers), ``purge`` and ``export``/``import`` do with one message: parse, summarise,
select, mask, render as JSON, write and read back an export line. The end-to-end runs
of the CLI over a fuzzed dead-letter queue are in tests/infra/runtime/test_fuzz.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.dlq.admin import replay_headers
from infra.dlq.cli import view
from infra.dlq.codec import (
    CARRIED_PROPERTIES,
    Selection,
    from_record,
    mask_body,
    mask_headers,
    parse,
    to_record,
)
from infra.headers import H_ATTEMPTS, H_ERROR, H_ERROR_TYPE, H_LAST_FAILURE, H_ROUTING_KEY
from messages.registry import encode
from tests.support.helpers import consent_changed

NOW = datetime(2026, 1, 1, tzinfo=UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.datetimes(timezones=st.just(UTC)),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=Decimal(10**6)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
our_keys = st.sampled_from(
    [
        H_ATTEMPTS,
        H_ERROR,
        H_ERROR_TYPE,
        H_LAST_FAILURE,
        H_ROUTING_KEY,
        "x-death",
        "x-first-death-reason",
    ]
)
headers = st.dictionaries(st.one_of(our_keys, st.text(max_size=20)), values, max_size=8)
properties = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(st.text(max_size=40), st.none(), scalars) for name in CARRIED_PROPERTIES
    },
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def envelope_with(changes: dict[str, Any]) -> bytes:
    body = json.loads(encode(consent_changed("debtor-fuzz")))
    body.update(changes)
    return json.dumps(body).encode()


bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["message_id", "type", "tenant_id", "payload"]), json_values
    ).map(envelope_with),
    st.integers(min_value=1, max_value=20_000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(min_value=1, max_value=3_000).map(
        lambda d: envelope_with({}).replace(
            b'"payload": {', b'"payload": {"x": ' + b"[" * d + b"]" * d + b", "
        )
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, raw_headers=headers, props=properties)
def test_any_dead_letter_is_listed_shown_replayed_and_exported(
    body: bytes, raw_headers: dict[str, Any], props: dict[str, Any]
) -> None:
    letter = parse("consent", body, raw_headers, props)
    assert letter.id
    json.dumps(letter.summary(NOW))
    Selection(ids=frozenset([letter.id])).matches(letter)
    Selection(type="consent.*", error="invalid", tenant="acme", since=NOW).matches(letter)
    json.dumps(mask_body(body), default=str)
    json.dumps(mask_headers(letter.raw_headers), default=str)
    for reveal in (False, True):
        json.dumps(view(letter, reveal), default=str)
    replay_headers(letter, "operator", NOW)
    line = to_record(letter)
    try:
        record = from_record(line, 1)
    except ValueError:
        return  # refused with the line number, never a crash
    assert record.body == body
