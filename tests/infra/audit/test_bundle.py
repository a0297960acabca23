"""Export bundles (issue 16): signed, verifiable offline, and refused after one byte changes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.settings import Settings
from infra.audit import bundle, checkpoints, proof
from infra.keys import Keys
from infra.runtime.worker import Effects, commit_effects
from infra.store import Store
from messages.audit import AuditCheckpoint
from messages.registry import decode
from tests.infra.audit.support import append
from tests.support.helpers import (
    ServiceFactory,
    drain_queue,
    migrated_store,
    run_cli,
    wait_until,
)

PROOF = Path(proof.__file__)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with migrated_store(settings) as opened:
        await append(opened, "acme", 4, "debtor-1")
        await append(opened, "acme", 3, "debtor-2", per_tx=3)
        request = Effects.standalone("dsr", "acme")
        request.audit("dsr_received", "debtor-1", request_id="r-77", kind="erasure")
        await commit_effects(opened, None, request)
        await append(opened, "acme", 2, "debtor-2")
        await append(opened, "beta", 2, "debtor-1")
        yield opened


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys.from_settings(settings)


def offline(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The proof module run as a third party would: one file, no store, no settings."""
    return subprocess.run(
        [sys.executable, str(PROOF), str(folder), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


async def test_a_subjects_bundle_verifies_offline_and_discloses_no_other_row(
    store: Store, keys: Keys, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    selection = bundle.Selection(subject_ref="debtor-1")
    folder, count = await bundle.export(store, keys.audit, None, "acme", selection, out)
    assert count == 5  # four rows and the request's
    rows = [json.loads(line) for line in (folder / proof.ROWS_FILE).read_text().splitlines()]
    assert {r["subject_ref"] for r in rows} == {"debtor-1"}
    assert {r["tenant_id"] for r in rows} == {"acme"}
    text = (folder / proof.MANIFEST_FILE).read_text()
    assert "debtor-2" not in text  # other rows are in the segment as digests only
    manifest = json.loads(text)
    assert manifest["checkpoint"]["seq"] == 10  # made on demand: none covered the rows yet
    assert len(manifest["segment"]["digests"]) == 10 - count
    public = keys.audit.public_key.hex()
    assert proof.verify_bundle(folder, public) == []
    result = offline(folder, "--public-key", public)
    assert result.returncode == 0, result.stdout
    assert (folder.stat().st_mode & 0o777, (folder / proof.ROWS_FILE).stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )


@pytest.mark.parametrize("name", [proof.ROWS_FILE, proof.MANIFEST_FILE])
async def test_one_changed_byte_fails_the_offline_check(
    store: Store, keys: Keys, tmp_path: Path, name: str
) -> None:
    folder, _ = await bundle.export(
        store, keys.audit, None, "acme", bundle.Selection(request_id="r-77"), tmp_path / "b"
    )
    assert proof.verify_bundle(folder) == []
    path = folder / name
    data = bytearray(path.read_bytes())
    at = data.index(b'"seq"') + 6  # a digit of the first seq
    data[at] = ord("7") if data[at] != ord("7") else ord("8")
    path.write_bytes(bytes(data))
    assert proof.verify_bundle(folder) != []
    result = offline(folder)
    assert result.returncode == 1
    assert "FAILED" in result.stdout


async def test_a_bundle_signed_by_another_key_is_refused(
    store: Store, keys: Keys, tmp_path: Path, settings: Settings
) -> None:
    folder, _ = await bundle.export(
        store, keys.audit, None, "acme", bundle.Selection(subject_ref="debtor-2"), tmp_path / "b"
    )
    other = Keys.from_settings(settings.with_changes(key_dir=tmp_path / "other-keys")).audit
    problems = proof.verify_bundle(folder, other.public_key.hex())
    assert "manifest signature does not verify" in problems
    assert "checkpoint signature does not verify" in problems


async def test_a_time_window_is_covered_by_an_existing_checkpoint(
    store: Store, keys: Keys, tmp_path: Path
) -> None:
    [made] = await checkpoints.make(store, keys.audit, None, ["acme"])
    await append(store, "acme", 2)  # after the checkpoint: outside the window
    since = datetime.now(UTC) - timedelta(hours=1)
    until = datetime.fromisoformat(made.made_at)
    folder, count = await bundle.export(
        store, keys.audit, None, "acme", bundle.Selection(since=since, until=until), tmp_path / "b"
    )
    assert count == 10
    manifest = json.loads((folder / proof.MANIFEST_FILE).read_text())
    assert manifest["checkpoint"] == made.as_dict()
    assert proof.verify_bundle(folder, keys.audit.public_key.hex()) == []


async def test_the_export_command_publishes_its_checkpoint_and_the_bundle_verifies(
    store: Store, settings: Settings, tmp_path: Path, start_service: ServiceFactory
) -> None:
    service = await start_service()  # the topology, so the checkpoint event has a route
    out = tmp_path / "cli-bundle"
    made = run_cli(
        settings, "audit", "export", "--tenant", "beta", "--subject", "debtor-1", "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    key = Keys.from_settings(settings).audit.public_key.hex()  # what `audit public-key` prints
    checked = run_cli(settings, "audit", "verify-bundle", str(out), "--public-key", key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verified" in checked.stdout

    url = settings.amqp_url.get_secret_value()
    published: list[AuditCheckpoint] = []

    async def arrived() -> bool:  # the command's relay, else the service's, publishes it
        taken = [decode(m.body) for m in await drain_queue(url, service.names.unrouted)]
        published.extend(e for e in taken if isinstance(e, AuditCheckpoint))
        return bool(published)

    await wait_until(arrived)
    [event] = published
    p = event.payload
    signed = proof.Checkpoint("beta", p.seq, p.row_hash, p.made_at, p.key_id, p.signature)
    assert signed.valid({p.key_id: bytes.fromhex(key)})
    assert (event.tenant_id, p.seq) == ("beta", 2)
