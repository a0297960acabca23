"""Several processes on one queue: ``privacyops run --processes 2`` against one store.

The two processes compete for 10,000 consent events over 2,000 channels (shuffled, a
tenth of them published twice) and 1,000 security alerts over 10 fingerprints, on
PostgreSQL and on SQLite. Every rule must still hold: each consent channel ends in its
newest event (withdrawal winning a tie), each message is applied once, and the alerts
of one fingerprint open exactly one incident however the processes interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.settings import Settings
from infra.audit.verify import verify
from infra.keys import Keys
from infra.publisher import Publisher
from messages.envelope import Envelope
from messages.names import Names
from messages.security import SecurityAlert, SecurityAlertPayload
from tests.support.db import sql
from tests.support.helpers import (
    BIN,
    consent_changed,
    delete_namespace,
    free_port,
    migrated_store,
    security_env,
    store_env,
    wait_until,
)

KEYS, EVENTS, ALERTS, FINGERPRINTS = 2_000, 10_000, 1_000, 10
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def consent_events(rng: random.Random) -> tuple[list[Envelope], dict[str, str]]:
    """EVENTS changes over KEYS subjects (e-mail channel); the expected final status each."""
    events, latest = [], {}
    for i in range(EVENTS):
        subject = f"debtor-{i % KEYS:05d}"
        moment = T0 + timedelta(seconds=rng.randrange(600))  # ties happen on purpose
        status = rng.choice(("granted", "withdrawn"))
        events.append(consent_changed(subject, status=status, occurred_at=moment))
        best = latest.get(subject)
        if best is None or moment > best[0] or (moment == best[0] and status == "withdrawn"):
            latest[subject] = (moment, status)
    return events, {s: status for s, (_, status) in latest.items()}


def alerts() -> list[SecurityAlert]:
    detected = datetime.now(UTC) - timedelta(minutes=10)
    return [
        SecurityAlert(
            tenant_id="acme",
            payload=SecurityAlertPayload.model_validate(
                {
                    "alert_id": f"alert-{i:05d}",
                    "source": "waf",
                    "category": "brute_force",
                    "detected_at": detected + timedelta(milliseconds=i),
                    "target": {"system": f"system-{i % FINGERPRINTS}"},
                    "personal_data_involved": "unknown",
                }
            ),
        )
        for i in range(ALERTS)
    ]


def supervisor_env(settings: Settings, metrics_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PRIVACYOPS_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PRIVACYOPS_NAMESPACE": settings.namespace,
        **store_env(settings),
        **security_env(settings),
        "PRIVACYOPS_WORKERS": json.dumps(["consent", "security"]),
        "PRIVACYOPS_METRICS_PORT": str(metrics_port),
        "PRIVACYOPS_METRICS_HOST": "127.0.0.1",
        "PRIVACYOPS_SHUTDOWN_DRAIN_S": "5",
        "PRIVACYOPS_LOG_LEVEL": "warning",
        "PRIVACYOPS_LOG_FORMAT": "json",
    }


def processed(port: int) -> float:
    """Messages one process applied, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("privacyops_messages_processed_total{")
    )


async def publish_all(publisher: Publisher, messages: list[Envelope]) -> None:
    for start in range(0, len(messages), 500):
        await asyncio.gather(*(publisher.publish(m) for m in messages[start : start + 500]))


@pytest.mark.timeout(300)
async def test_two_processes_share_the_queues_and_every_rule_holds(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    rng = random.Random(12)
    events, expected = consent_events(rng)
    doubled = events + rng.sample(events, EVENTS // 10)  # redelivered copies, same ids
    rng.shuffle(doubled)
    port = free_port()
    log = (tmp_path / "processes.log").open("wb")
    supervisor = await asyncio.create_subprocess_exec(
        str(BIN),
        *("run", "--migrate", "--processes", "2"),
        env=supervisor_env(settings, port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    db = settings.db_path
    try:

        async def both_consuming() -> bool:
            try:
                return all(processed(p) >= 0 for p in (port, port + 1))
            except OSError:
                return False

        await wait_until(both_consuming, within=60, interval=0.2)
        await publish_all(publisher, [*doubled, *alerts()])

        async def settled() -> bool:
            return sql(db, "SELECT count(*) FROM inbox") == [(EVENTS + ALERTS,)]

        await wait_until(settled, within=240, interval=0.5)
        shares = [processed(p) for p in (port, port + 1)]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), 60)
        log.close()
        await delete_namespace(
            settings.amqp_url.get_secret_value(),
            Names(settings.namespace),
            ["consent", "security"],
            settings.retry_delays_ms,
        )
    assert code == 0
    assert all(share > 0 for share in shares), f"one process did all the work: {shares}"
    assert sum(shares) == EVENTS + ALERTS  # no message applied twice, by either process

    final = dict(sql(db, "SELECT subject_ref, status FROM consent_state"))
    assert final == expected
    assert sql(db, "SELECT count(*) FROM consent_history") == [(EVENTS,)]
    assert sql(db, "SELECT count(*) FROM security_incidents") == [(FINGERPRINTS,)]
    counts = sql(db, "SELECT alert_count FROM security_incidents")
    assert sorted(c for (c,) in counts) == [ALERTS // FINGERPRINTS] * FINGERPRINTS
    assert sql(db, "SELECT count(*) FROM security_alerts") == [(ALERTS,)]
    dead = sql(db, "SELECT count(*) FROM audit_log WHERE action = 'security_alert_repeated'")
    assert dead == [(0,)]
    # Both processes appended to the tenants' audit chains all along: still one valid chain each.
    async with migrated_store(settings) as store:
        reports = await verify(store, Keys.from_settings(settings).audit.public_keys, None)
    assert [r.broken for r in reports if not r.ok] == []
    assert sum(r.rows for r in reports) == sql(db, "SELECT count(*) FROM audit_log")[0][0]
