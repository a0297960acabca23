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
)
DEFERRED_DELETE = (
    "DELETE FROM deferred_erasures WHERE tenant_id = ? AND subject_ref = ? AND hold_group = ?"
)


@dataclass
class ErasureResult:
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
                }
                for table, h in self.held.items()
            },
            "suppressed_channels": self.suppressed_channels,
        }


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


async def load_accounts(tx: Transaction, tenant_id: str, subject_ref: str) -> list[Account]:
    rows = await tx.fetchall(
        "SELECT status, debt_type, opened_on, closed_on, last_payment_on, account_id,"
        " judgment_on FROM accounts WHERE tenant_id = ? AND subject_ref = ?",
        (tenant_id, subject_ref),
    )
    return [
        Account(
            status,
            debt_type,
            date.fromisoformat(opened),
            _day(closed),
            _day(paid),
            str(account_id),
            _day(judgment),
        )
        for status, debt_type, opened, closed, paid, account_id, judgment in rows
    ]


@dataclass(frozen=True)
class Eraser:
    """Erases one subject's data within the caller's transaction, recording on ``effects``."""

    datamap: DataMap
    retention: Retention
    digest_key: bytes

    async def erase(
        self, tx: Transaction, effects: Effects, subject_ref: str, request_id: str, today: date
    ) -> ErasureResult:
        tenant = effects.tenant_id
        accounts = await load_accounts(tx, tenant, subject_ref)
        per_account = {
            a.account_id: account_holds(self.retention, tenant, a, today) for a in accounts
        }
        whole = subject_holds(per_account)
        result = ErasureResult()
        if "consent" not in whole:
            result.suppressed_channels = await self._keep_opt_outs(tx, effects, subject_ref, today)
        effects.write(RETENTION_RESTRICTIONS_DELETE, (tenant, subject_ref))  # re-marked below
        for name, table in self.datamap.tables.items():
            held = {
                account: holds[table.hold_group]
                for account, holds in per_account.items()
                if table.record_column and table.hold_group in holds
            }
            await self._table(
                tx, effects, name, table, subject_ref, request_id, whole, held, result
            )
        self._settle_deferred(effects, subject_ref, request_id, per_account, whole)
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
        return result

    async def _table(
        self,
        tx: Transaction,
        effects: Effects,
        name: str,
        table: TableMap,
        subject_ref: str,
        request_id: str,
        whole: dict[str, ActiveHold],
        held_records: dict[str, ActiveHold],
        result: ErasureResult,
    ) -> None:
        """Hold or erase one table's rows: per record where rows belong to an account."""
        subject_hold = whole.get(table.hold_group)
        where = f"tenant_id = ? AND {table.subject_column} = ?"
        params: list[str] = [effects.tenant_id, subject_ref]
        column = table.record_column
        if column is None:
            if subject_hold is not None:
                self._restrict(effects, name, subject_ref, request_id, subject_hold, result)
                return
        else:
            present = await tx.fetchall(
                f"SELECT DISTINCT {column} FROM {name} WHERE {where} AND {column} IS NOT NULL",
                params,
            )
            for account in sorted(str(a) for (a,) in present if a in held_records):
                hold = held_records[account]
                self._restrict(effects, f"{name}:{account}", subject_ref, request_id, hold, result)
            if subject_hold is not None:
                loose = f"{where} AND {column} IS NULL"
                if await self._count(tx, name, loose, params):
                    self._restrict(effects, name, subject_ref, request_id, subject_hold, result)
                where += f" AND {column} IS NOT NULL"
            if held_records:
                marks = ", ".join("?" for _ in held_records)
                where += f" AND ({column} IS NULL OR {column} NOT IN ({marks}))"
                params += list(held_records)
        count = await self._count(tx, name, where, params)
        if count:
            self._erase_rows(effects, name, table, where, params, subject_ref)
            result.erased[name] = count

    @staticmethod
    async def _count(tx: Transaction, name: str, where: str, params: list[str]) -> int:
        row = await tx.fetchone(f"SELECT count(*) FROM {name} WHERE {where}", params)
        return int(row[0]) if row else 0

    def _erase_rows(
        self,
        effects: Effects,
        name: str,
        table: TableMap,
        where: str,
        params: list[str],
        subject_ref: str,
    ) -> None:
        if table.erasure == "delete_row":
            effects.write(f"DELETE FROM {name} WHERE {where}", tuple(params))
        else:
            sets, values = self._column_actions(table)
            effects.write(f"UPDATE {name} SET {sets} WHERE {where}", (*values, *params))
        effects.audit("subject_data_erased", subject_ref, table=name, erasure=table.erasure)

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
        self,
        effects: Effects,
        scope: str,
        subject_ref: str,
        request_id: str,
        hold: ActiveHold,
        result: ErasureResult,
    ) -> None:
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
        result.held[scope] = hold

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

    async def _keep_opt_outs(
        self, tx: Transaction, effects: Effects, subject_ref: str, today: date
    ) -> list[str]:
        """Reduce the subject's opt-out to suppression entries before the data goes.

        The subject asked to be forgotten, which no marketing sender may take as a
        reason to start again: every channel and purpose is suppressed as of now, by
        keyed digests of the subject reference and of each contact value, so that a
        grant dated before the erasure that arrives late is barred (NCR reg 58(4)). A
        refusal when asked (POPIA s69(2)(a)) is kept as "never ask".
        """
        tenant = effects.tenant_id
        contacts = await tx.fetchall(
            "SELECT value FROM contact_points WHERE tenant_id = ? AND subject_ref = ?",
            (tenant, subject_ref),
        )
        refused = await tx.fetchone(
            "SELECT count(*) FROM consent_history WHERE tenant_id = ? AND subject_ref = ?"
            " AND status = 'refused'",
            (tenant, subject_ref),
        )
        never_ask = int(bool(refused and refused[0]))
        expires = add_years(today, self.retention.opt_out_years).isoformat()
        digests = [subject_digest(self.digest_key, subject_ref)]
        digests += [keyed_digest(self.digest_key, str(value)) for (value,) in contacts]
        for digest in dict.fromkeys(digests):
            effects.write(
                SUPPRESSION_UPSERT,
                (
                    tenant,
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
