"""The audit chain on the real store (both): every kind of tampering named by verify.

Each test writes two tenants' chains through ``Effects.audit`` (as workers do), changes
the store by hand as an attacker with write access would, and checks that ``verify``
names the right row and leaves the other tenant's chain valid (issue 16).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config.settings import Settings
from infra.audit import checkpoints
from infra.audit.chain import Entry
from infra.audit.proof import GENESIS, link
from infra.audit.verify import Report, verify
from infra.keys import Keys
from infra.store import Store
from tests.infra.audit.support import append, execute, ids, row
from tests.support.db import sql
from tests.support.helpers import migrated_store, run_cli

ROWS = 12


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with migrated_store(settings) as opened:
        await append(opened, "acme", 5)
        await append(opened, "beta", 3, per_tx=3)
        await append(opened, "acme", ROWS - 5, per_tx=4)
        yield opened


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys.from_settings(settings)


async def reports(store: Store, keys: Keys) -> dict[str, Report]:
    return {r.tenant_id: r for r in await verify(store, keys.audit.public_keys, None)}


async def test_an_untouched_chain_verifies_for_every_tenant(store: Store, keys: Keys) -> None:
    found = await reports(store, keys)
    assert {t: (r.ok, r.rows, r.head_seq) for t, r in found.items()} == {
        "acme": (True, ROWS, ROWS),
        "beta": (True, 3, 3),
    }


def _update_details(db: Path, seq: dict[int, int]) -> tuple[str, int, int]:
    execute(db, "UPDATE audit_log SET details = ? WHERE id = ?", '{"n": 99}', seq[5])
    return "content", seq[5], 5


def _delete_row(db: Path, seq: dict[int, int]) -> tuple[str, int, int]:
    execute(db, "DELETE FROM audit_log WHERE id = ?", seq[5])
    return "missing", seq[6], 6


def _insert_row(db: Path, seq: dict[int, int]) -> tuple[str, int | None, int | None]:
    copy = row(db, seq[5])
    execute(
        db,
        "INSERT INTO audit_log (tenant_id, recorded_at, actor, action, subject_ref, details)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        copy["tenant_id"],
        copy["recorded_at"],
        copy["actor"],
        "thing_undone",
        copy["subject_ref"],
        copy["details"],
    )
    [new_id] = [i for i in _all_ids(db) if i not in seq.values() and _tenant(db, i) == "acme"]
    return "not_in_chain", new_id, None


def _forge_append(db: Path, seq: dict[int, int]) -> tuple[str, int, int]:
    """A row hashed correctly onto the end, the head left alone: rows after the head."""
    last = row(db, seq[ROWS])
    entry = Entry(
        "acme", ROWS + 1, last["recorded_at"], "worker:x", "thing_done", None, None, None, 1, "{}"
    )
    execute(
        db,
        "INSERT INTO audit_log (tenant_id, recorded_at, actor, action, attempt, details, seq,"
        " prev_hash, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "acme",
        entry.recorded_at,
        entry.actor,
        entry.action,
        1,
        "{}",
        ROWS + 1,
        last["row_hash"],
        link(last["row_hash"], entry.digest()),
    )
    [new_id] = [i for i in _all_ids(db) if i not in seq.values() and _tenant(db, i) == "acme"]
    return "beyond_head", new_id, ROWS + 1


def _reorder_rows(db: Path, seq: dict[int, int]) -> tuple[str, int, int]:
    """Swap two rows' places: row 5's content moves to row 6's id and back."""
    a, b = row(db, seq[5]), row(db, seq[6])
    columns = [c for c in a if c != "id"]
    assignments = ", ".join(f"{c} = ?" for c in columns)
    execute(db, "UPDATE audit_log SET seq = -1 WHERE id = ?", seq[5])
    execute(
        db, f"UPDATE audit_log SET {assignments} WHERE id = ?", *[a[c] for c in columns], seq[6]
    )
    execute(
        db, f"UPDATE audit_log SET {assignments} WHERE id = ?", *[b[c] for c in columns], seq[5]
    )
    return "out_of_order", seq[5], 6


def _truncate_tail(db: Path, seq: dict[int, int]) -> tuple[str, int, int]:
    execute(db, "DELETE FROM audit_log WHERE tenant_id = 'acme' AND seq > ?", ROWS - 3)
    return "tail_missing", seq[ROWS - 3], ROWS - 2


def _all_ids(db: Path) -> list[int]:
    return [int(i) for (i,) in sql(db, "SELECT id FROM audit_log")]


def _tenant(db: Path, row_id: int) -> str:
    return str(row(db, row_id)["tenant_id"])


Tamper = Callable[[Path, dict[int, int]], tuple[str, int | None, int | None]]


@pytest.mark.parametrize(
    "tamper",
    [_update_details, _delete_row, _insert_row, _forge_append, _reorder_rows, _truncate_tail],
    ids=lambda t: t.__name__.strip("_"),
)
async def test_tampering_is_named_at_the_right_row(
    store: Store, keys: Keys, settings: Settings, tamper: Tamper
) -> None:
    problem, row_id, seq = tamper(settings.db_path, ids(settings.db_path, "acme"))
    found = await reports(store, keys)
    broken = found["acme"].broken
    assert broken is not None
    assert (broken.problem, broken.id, broken.seq) == (problem, row_id, seq), broken.detail
    assert found["beta"].ok


async def test_a_chain_replaced_after_a_checkpoint_is_caught_by_the_checkpoint(
    store: Store, keys: Keys, settings: Settings
) -> None:
    db = settings.db_path
    made = await checkpoints.make(store, keys.audit, None)
    assert {(c.tenant_id, c.seq) for c in made} == {("acme", ROWS), ("beta", 3)}
    # An attacker rewrites every row of acme and recomputes every hash and the head.
    prev = GENESIS
    for seq, row_id in sorted(ids(db, "acme").items()):
        old = row(db, row_id)
        fields = {k: old[k] for k in Entry.__dataclass_fields__ if k != "seq"}
        entry = Entry(**{**fields, "details": '{"n": -1}'}, seq=seq)
        row_hash = link(prev, entry.digest())
        execute(
            db,
            "UPDATE audit_log SET details = ?, prev_hash = ?, row_hash = ? WHERE id = ?",
            entry.details,
            prev,
            row_hash,
            row_id,
        )
        prev = row_hash
    execute(db, "UPDATE audit_chain_head SET row_hash = ? WHERE tenant_id = 'acme'", prev)

    broken = (await reports(store, keys))["acme"].broken
    assert broken is not None
    assert (broken.problem, broken.id, broken.seq) == ("checkpoint", ids(db, "acme")[ROWS], ROWS)
    # ... and a checkpoint altered to match is not signed by the audit key.
    execute(db, "UPDATE audit_checkpoints SET row_hash = ? WHERE tenant_id = 'acme'", prev)
    broken = (await reports(store, keys))["acme"].broken
    assert broken is not None
    assert broken.problem == "checkpoint_forged"


async def test_appends_after_a_checkpoint_keep_the_chain_valid(store: Store, keys: Keys) -> None:
    await checkpoints.make(store, keys.audit, None)
    await append(store, "acme", 3, per_tx=3)
    assert await checkpoints.make(store, keys.audit, None, ["beta"]) == []  # beta did not move
    [again] = await checkpoints.make(store, keys.audit, None, ["acme"])
    assert again.seq == ROWS + 3
    found = await reports(store, keys)
    assert found["acme"].ok
    assert found["acme"].checkpoints == 2


async def test_the_command_exits_1_and_names_the_row(store: Store, settings: Settings) -> None:
    clean = run_cli(settings, "audit", "verify", "--json")
    assert clean.returncode == 0, clean.stderr
    assert all(t["ok"] for t in json.loads(clean.stdout))
    problem, row_id, _ = _update_details(settings.db_path, ids(settings.db_path, "acme"))
    broken = run_cli(settings, "audit", "verify", "--tenant", "acme")
    assert broken.returncode == 1
    assert f"BROKEN at row id {row_id} (seq 5" in broken.stdout
    assert problem in broken.stdout
