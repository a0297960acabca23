"""Issue 11, E13-E15: redaction, the ops endpoint, the data map's names.

(E12, the non-ASCII signature header, is in test_publishers.py; E16, the broker's
message size, in test_tls_broker.py.)
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

from config.datamap import RESERVED_TABLES, DataMap, load_datamap
from config.settings import Settings
from infra import logging as plog
from infra.redaction import MASK, describe_error, redact, redact_text
from infra.runtime.service import Service
from messages.errors import ProviderUnavailable
from workers import registry
from workers.consent import ConsentWorker

# -- E13. redaction -------------------------------------------------------------------------

MISSED_BEFORE = ["ID8001015009087", "800101 5009 087", "(082) 123 4567", "082 123 45 67"]


@pytest.mark.parametrize("planted", MISSED_BEFORE)
def test_id_numbers_and_phone_numbers_in_any_grouping_are_masked(planted: str) -> None:
    masked = redact_text(f"lookup failed for {planted} at 10:00")
    assert not any(ch.isdigit() for ch in masked.replace("10:00", ""))
    assert MASK in masked


class Debtor(BaseModel):
    name: str
    reference: str


def test_keys_objects_and_models_are_masked_never_echoed() -> None:
    event = {
        "thandi@example.co.za": "x",  # a key that is itself personal data
        "by_phone": {"0821234567": 1},
        "model": Debtor(name="Thandi", reference="ID8001015009087"),
        "obj": ValueError("sent to 082 123 4567"),
    }
    text = json.dumps(redact(event))
    for planted in ("thandi@example.co.za", "0821234567", "Thandi", "8001015009087", "123 4567"):
        assert planted not in text
    assert describe_error(ProviderUnavailable("to (082) 123 4567")) == f"to {MASK}"


def test_the_logging_pipeline_masks_what_handlers_log() -> None:
    stream = io.StringIO()
    plog.configure("info", "json", stream)
    try:
        structlog.get_logger("t").info(
            "lookup",
            detail={"ID8001015009087": "800101 5009 087"},
            model=Debtor(name="T", reference="x"),
        )
    finally:
        plog.configure("info", "json")
    line = stream.getvalue()
    assert "8001015009087" not in line
    assert "5009 087" not in line
    assert '"name": "[redacted]"' in line


def test_opaque_references_survive() -> None:
    for keep in ["debtor-7f3a9c", "inc-a59fb10260944152", "consent.retry.60000ms", "2026-03-01"]:
        assert redact_text(keep) == keep


# -- E14. the ops endpoint -----------------------------------------------------------------


def test_the_ops_endpoint_binds_loopback_by_default() -> None:
    assert Settings().metrics_host == "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> int:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    return int(raw.split(b" ", 2)[1])


async def test_idle_sockets_do_not_starve_the_probes_and_health_is_cached(
    settings: Settings,
) -> None:
    port = free_port()
    service = Service(
        settings.with_changes(metrics_port=port, health_timeout_s=0.5),
        [ConsentWorker()],
        schemas=registry.schemas(),
        serve_ops=True,
    )
    await service.start()
    idle: list[asyncio.StreamWriter] = []
    try:
        for _ in range(64):  # the hand-written server gave up at 16
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            idle.append(writer)
        assert await http_get(port, "/readyz") == 200
        # /healthz answers from cache: it does not wait for the store's write lock.
        async with service.store.transaction():
            started = time.perf_counter()
            assert await http_get(port, "/healthz") == 200
            assert time.perf_counter() - started < 0.5
        assert await http_get(port, "/metrics") == 200
    finally:
        for writer in idle:
            writer.close()
        await service.stop()
        from messages.names import Names
        from tests.support.helpers import delete_namespace

        await delete_namespace(
            settings.amqp_url.get_secret_value(),
            Names(settings.namespace),
            ["consent", "audit"],
            settings.retry_delays_ms,
        )


# -- E15. the data map's names ---------------------------------------------------------------


def _with(table: str, **column: object) -> dict[str, object]:
    shipped = load_datamap().model_dump()
    shipped["tables"][table] = {
        "description": "x",
        "hold_group": "identity",
        "columns": {"value": {"category": "contact", **column}},
    }
    return shipped


@pytest.mark.parametrize(
    "row_key", ["kind OR 1=1", "kind; DROP TABLE debtors", "Kind", "kind--", "1kind"]
)
def test_a_crafted_row_key_is_refused(row_key: str) -> None:
    with pytest.raises(ValueError, match="row_key must be a plain"):
        DataMap.model_validate(_with("contact_extra", correctable=True, row_key=row_key))


@pytest.mark.parametrize(
    "table",
    [
        "inbox",
        "audit_log",
        "audit_chain_head",
        "audit_checkpoints",
        "event_outbox",
        "notification_outbox",
        "schema_migrations",
    ],
)
def test_the_map_may_not_name_runtime_tables(table: str) -> None:
    with pytest.raises(ValueError, match="own tables"):
        DataMap.model_validate(_with(table))


def test_every_table_privacyops_owns_is_reserved() -> None:
    """Whatever table infra creates (runtime, audit chain, console) the map may not name."""
    from infra.audit.tables import AUDIT_CHAIN
    from infra.console.tables import CONSOLE
    from infra.runtime.tables import RUNTIME

    created = {
        name
        for schema in (RUNTIME, AUDIT_CHAIN, CONSOLE)
        for step in schema.migrations
        for script in step.sql.values()
        for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", script)
    }
    assert {"inbox", "audit_log", "console_admins"} <= created
    assert created - RESERVED_TABLES == set()


def _shipped_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    shipped = load_datamap().model_dump()
    change(shipped["tables"])
    return shipped


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("a table name", lambda t: t.update({"debtors; --": t.pop("debtors")})),
        ("a column name", lambda t: t["debtors"].update(subject_column="1=1 OR subject_ref")),
        ("a column name", lambda t: t["accounts"].update(record_column="x OR 1=1")),
        (
            "a column name",
            lambda t: t["debtors"]["columns"].update({"id_number, x": {"category": "x"}}),
        ),
        ("data_source", lambda t: t["debtors"].update(data_source="Other DB")),
    ],
)
def test_every_name_the_map_gives_must_be_an_identifier(
    what: str, change: Callable[[dict[str, Any]], None]
) -> None:
    with pytest.raises(ValueError, match=f"{what} must be a plain"):
        DataMap.model_validate(_shipped_with(change))
