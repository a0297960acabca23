"""Erasure under legal holds (POPIA s24, s14; GDPR art 17; NCR reg 58(4)).

See docs/rules.md "Erasure and retention holds".

1. Holds first, per record: each account decides which retention groups of
   its own records (the account, its payments, the notes about it) must stay;
   data about the subject as a whole stays while any account holds its group,
   and the identity while any hold at all is active.
2. What may go is erased as the data map says: the row deleted, or each column
   nulled, masked or de-identified with its own random token (never a hash,
   which is pseudonymisation: POPIA s14(5)); no de-identified row keeps a link.
3. What must stay is restricted to storage, with its legal basis and the date
   it may go; recipients are told (``subject.restricted``), and a deferred
   erasure is recorded for the hold sweep, due when the first held record may go.
4. The marketing opt-out survives as suppression entries: keyed digests of the
   subject reference and of each contact value, and nothing else (NCR reg 58(4)).

Every statement names the tenant and the subject: no other row can change.

Per data source (``infra/sources.py``, ``workers/dsr/steps.py``): the holds are
evaluated on the accounts as their source holds them now, and each source's tables
are erased in that source's own transaction (``erase_in_source``); what the
erasure leaves in privacyops' store (restrictions, deferred erasures, audit,
``subject.restricted``) is recorded after it (``record``). Re-running a step is
harmless: deleted rows are gone and de-identified rows no longer carry the
subject's reference, so nothing is erased twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

from config.datamap import DataMap, Retention, TableMap, add_years
from infra.runtime.worker import Effects
from infra.store import Transaction
from messages.consent import Channel
from workers.dsr.recipients import tell_restricted
from workers.dsr.rules import Account, ActiveHold, account_holds, subject_holds
from workers.platform.keys import keyed_digest
from workers.platform.optouts import ANY, SUPPRESSION_UPSERT, subject_digest
from workers.platform.tables import RESTRICTION_UPSERT

MASK = "[erased]"
DEFERRED_UPSERT = (
    "INSERT INTO deferred_erasures (tenant_id, subject_ref, hold_group, request_id, basis,"
    " run_after) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, subject_ref, hold_group)"
    " DO UPDATE SET request_id = excluded.request_id, basis = excluded.basis,"
    " run_after = excluded.run_after"
)
RETENTION_RESTRICTIONS_DELETE = (
    "DELETE FROM restrictions WHERE tenant_id = ? AND subject_ref = ? AND origin = 'retention'"
    " AND (scope = ? OR scope LIKE ?)"
)
DEFERRED_DELETE = (
    "DELETE FROM deferred_erasures WHERE tenant_id = ? AND subject_ref = ? AND hold_group = ?"
)


@dataclass
class ErasureResult:
    """What erasure did to one source's tables, or (merged) to all of them."""

    erased: dict[str, int] = field(default_factory=dict)
    held: dict[str, ActiveHold] = field(default_factory=dict)
    suppressed_channels: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.held

    def summary(self) -> dict[str, object]:
        return {
            "erased": self.erased,
            "held": {
                table: {
                    "hold": h.name,
                    "basis": h.basis,
                    "until": h.until.isoformat() if h.until else "while the debt is open",
                    "group": h.group,
                }
                for table, h in self.held.items()
            },
            "suppressed_channels": self.suppressed_channels,
        }

    def merge(self, summary: dict[str, object]) -> None:
        """Add one step's ``summary()`` (as stored) to this result."""
        erased = summary.get("erased") or {}
        held = summary.get("held") or {}
        assert isinstance(erased, dict)
        assert isinstance(held, dict)
        for table, count in erased.items():
            self.erased[table] = self.erased.get(table, 0) + int(count)
        for scope, h in held.items():
            until = h["until"]
            self.held[scope] = ActiveHold(
                h.get("group", ""),
                h["hold"],
                h["basis"],
                None if until == "while the debt is open" else date.fromisoformat(until),
            )


@dataclass(frozen=True)
class Holds:
    """The holds on one subject's data: per account (its records), and on the whole."""

    per_account: dict[str, dict[str, ActiveHold]]
    whole: dict[str, ActiveHold]


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


async def load_accounts(tx: Transaction, tenant_id: str, subject_ref: str) -> list[Account]:
    """The subject's accounts, read in the transaction of the source holding ``accounts``."""
    rows = await tx.fetchall(
        "SELECT status, debt_type, opened_on, closed_on, last_payment_on, account_id,"
        " judgment_on FROM accounts WHERE tenant_id = ? AND subject_ref = ?",
        (tenant_id, subject_ref),
    )
    return [
        Account(
            status,
            debt_type,
            _as_date(opened) or date.min,
            _as_date(closed),
            _as_date(paid),
            str(account_id),
            _as_date(judgment),
        )
        for status, debt_type, opened, closed, paid, account_id, judgment in rows
    ]


def _as_date(value: object) -> date | None:
    """A date column as either source types it: ISO text (SQLite) or a date (PostgreSQL)."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class Eraser:
    """Erases one subject's data source by source; records in privacyops' store on ``effects``."""

    datamap: DataMap
    retention: Retention
    digest_key: bytes

    def holds(self, tenant_id: str, accounts: list[Account], today: date) -> Holds:
        """docs/rules.md "Erasure and retention holds": per record, then on the whole."""
        per_account = {
            a.account_id: account_holds(self.retention, tenant_id, a, today) for a in accounts
        }
        return Holds(per_account, subject_holds(per_account))

    async def erase_in_source(
        self, tx: Transaction, tenant: str, subject_ref: str, tables: list[str], holds: Holds
    ) -> ErasureResult:
        """Erase what may go of ``tables`` in ``tx``, the transaction of their source."""
        result = ErasureResult()
        for name in tables:
            table = self.datamap.tables[name]
            held = {
                account: h[table.hold_group]
                for account, h in holds.per_account.items()
                if table.record_column and table.hold_group in h
            }
            await self._table(tx, tenant, name, table, subject_ref, holds.whole, held, result)
        return result

    def record(
        self,
        effects: Effects,
        subject_ref: str,
        request_id: str,
        tables: list[str],
        result: ErasureResult,
        holds: Holds,
    ) -> None:
        """After a source's step: restrictions of what it kept, audit, deferred erasures."""
        tenant = effects.tenant_id
        for name in tables:  # re-marked below from what this run kept
            effects.write(RETENTION_RESTRICTIONS_DELETE, (tenant, subject_ref, name, f"{name}:%"))
        for name, count in result.erased.items():
            erasure = self.datamap.tables[name].erasure
            effects.audit(
                "subject_data_erased", subject_ref, table=name, erasure=erasure, rows=count
            )
        for scope, hold in result.held.items():
            self._restrict(effects, scope, subject_ref, request_id, hold)
        self._settle_deferred(effects, subject_ref, request_id, holds.per_account, holds.whole)
        if result.held:
            until = [h.until for h in result.held.values()]
            tell_restricted(
                effects,
                self.datamap,
                subject_ref,
                sorted(result.held),
                "retention",
                request_id=request_id,
                until=None if None in until else max(u for u in until if u is not None),
            )

    async def _table(
        self,
        tx: Transaction,
        tenant: str,
        name: str,
        table: TableMap,
        subject_ref: str,
        whole: dict[str, ActiveHold],
        held_records: dict[str, ActiveHold],
        result: ErasureResult,
    ) -> None:
        """Hold or erase one table's rows: per record where rows belong to an account."""
        subject_hold = whole.get(table.hold_group)
        where = f"tenant_id = ? AND {table.subject_column} = ?"
        params: list[str] = [tenant, subject_ref]
        column = table.record_column
        if column is None:
            if subject_hold is not None:
                result.held[name] = subject_hold
                return
        else:
            present = await tx.fetchall(
                f"SELECT DISTINCT {column} FROM {name} WHERE {where} AND {column} IS NOT NULL",
                params,
            )
            for account in sorted(str(a) for (a,) in present if a in held_records):
                result.held[f"{name}:{account}"] = held_records[account]
            if subject_hold is not None:
                loose = f"{where} AND {column} IS NULL"
                if await self._count(tx, name, loose, params):
                    result.held[name] = subject_hold
                where += f" AND {column} IS NOT NULL"
            if held_records:
                marks = ", ".join("?" for _ in held_records)
                where += f" AND ({column} IS NULL OR {column} NOT IN ({marks}))"
                params += list(held_records)
        count = await self._count(tx, name, where, params)
        if count:
            await self._erase_rows(tx, name, table, where, params)
            result.erased[name] = count

    @staticmethod
    async def _count(tx: Transaction, name: str, where: str, params: list[str]) -> int:
        row = await tx.fetchone(f"SELECT count(*) FROM {name} WHERE {where}", params)
        return int(row[0]) if row else 0

    async def _erase_rows(
        self, tx: Transaction, name: str, table: TableMap, where: str, params: list[str]
    ) -> None:
        if table.erasure == "delete_row":
            await tx.execute(f"DELETE FROM {name} WHERE {where}", tuple(params))
        else:
            sets, values = self._column_actions(table)
            await tx.execute(f"UPDATE {name} SET {sets} WHERE {where}", (*values, *params))

    @staticmethod
    def _column_actions(table: TableMap) -> tuple[str, list[str | None]]:
        """Each column's action; every de-identified column gets its own random token."""
        sets, params = [], []
        for column, spec in table.columns.items():
            if spec.erasure == "keep":
                continue
            token = f"anon-{uuid.uuid4().hex}"  # random, unlinkable: de-identified, not hashed
            sets.append(f"{column} = ?")
            params.append({"null": None, "mask": MASK, "deidentify": token}[spec.erasure])
        return ", ".join(sets), params

    def _restrict(
        self, effects: Effects, scope: str, subject_ref: str, request_id: str, hold: ActiveHold
    ) -> None:
        """A restriction mark in privacyops' store: it holds the marks of every source, so a
        platform database privacyops cannot annotate still has them (and ``subject.restricted``
        tells the platform)."""
        until = hold.until.isoformat() if hold.until else None
        effects.write(
            RESTRICTION_UPSERT,
            (
                effects.tenant_id,
                subject_ref,
                scope,
                "retention",
                hold.basis,
                request_id,
                effects.now.isoformat(),
                until,
            ),
        )
        effects.audit("subject_data_held", subject_ref, table=scope, hold=hold.name, until=until)

    def _settle_deferred(
        self,
        effects: Effects,
        subject_ref: str,
        request_id: str,
        per_account: dict[str, dict[str, ActiveHold]],
        whole: dict[str, ActiveHold],
    ) -> None:
        """One deferred erasure per held group, due when its first held record may go."""
        key = (effects.tenant_id, subject_ref)
        for group in {t.hold_group for t in self.datamap.tables.values()}:
            holds = [h[group] for h in per_account.values() if group in h]
            holds += [whole[group]] if group in whole else []
            if not holds:
                effects.write(DEFERRED_DELETE, (*key, group))
                continue
            dated = [h for h in holds if h.until is not None]
            first = min(dated, key=lambda h: h.until or date.max) if dated else holds[0]
            effects.write(
                DEFERRED_UPSERT,
                (
                    *key,
                    group,
                    request_id,
                    first.basis,
                    first.until.isoformat() if first.until else None,
                ),
            )

    def keep_opt_outs(
        self,
        effects: Effects,
        subject_ref: str,
        today: date,
        contacts: list[str],
        *,
        refused: bool,
    ) -> list[str]:
        """Reduce the subject's opt-out to suppression entries before the data goes.

        The subject asked to be forgotten, which no marketing sender may take as a
        reason to start again: every channel and purpose is suppressed as of now, by
        keyed digests of the subject reference and of each contact value (read from
        their source before any step erases them), so that a grant dated before the
        erasure that arrives late is barred (NCR reg 58(4)). A refusal when asked
        (POPIA s69(2)(a)) is kept as "never ask".
        """
        never_ask = int(refused)
        expires = add_years(today, self.retention.opt_out_years).isoformat()
        digests = [subject_digest(self.digest_key, subject_ref)]
        digests += [keyed_digest(self.digest_key, value) for value in contacts]
        for digest in dict.fromkeys(digests):
            effects.write(
                SUPPRESSION_UPSERT,
                (
                    effects.tenant_id,
                    digest,
                    ANY,
                    ANY,
                    "NCR reg 58(4): opt-out kept 3 years after erasure",
                    effects.now.isoformat(),
                    never_ask,
                    effects.now.isoformat(),
                    expires,
                ),
            )
        channels = [channel.value for channel in Channel]
        effects.audit(
            "opt_out_kept_as_suppression", subject_ref, channels=channels, never_ask=never_ask
        )
        return channels
