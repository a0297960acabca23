"""Erasure under legal holds (POPIA s24, s14; GDPR art 17; NCR reg 58(4); DOMAIN.md 1-2).

1. Holds first: the subject's accounts decide which retention groups of the
   data map must stay (an open account always holds; then the retention periods).
2. What may go is erased as the data map says: the row deleted, or each column
   nulled, masked or de-identified with a random token (never a hash, which is
   pseudonymisation: POPIA s14(5)).
3. What must stay is restricted to storage, with its legal basis and the date
   it may go, and a deferred erasure is recorded for the hold sweep.
4. The marketing opt-out survives as a suppression entry: a keyed digest of the
   contact value per withdrawn channel, and nothing else (NCR reg 58(4)).

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
from workers.dsr.rules import Account, ActiveHold, active_holds
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


async def load_accounts(tx: Transaction, tenant_id: str, subject_ref: str) -> list[Account]:
    rows = await tx.fetchall(
        "SELECT status, debt_type, opened_on, closed_on, last_payment_on FROM accounts"
        " WHERE tenant_id = ? AND subject_ref = ?",
        (tenant_id, subject_ref),
    )
    return [
        Account(
            status,
            debt_type,
            date.fromisoformat(opened),
            date.fromisoformat(closed) if closed else None,
            date.fromisoformat(paid) if paid else None,
        )
        for status, debt_type, opened, closed, paid in rows
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
        holds = active_holds(
            self.retention, tenant, await load_accounts(tx, tenant, subject_ref), today
        )
        result = ErasureResult()
        if "consent" not in holds:
            result.suppressed_channels = await self._keep_opt_outs(tx, effects, subject_ref, today)
        for name, table in self.datamap.tables.items():
            hold = holds.get(table.hold_group)
            if hold is not None:
                self._restrict(effects, name, table, subject_ref, request_id, hold)
                result.held[name] = hold
                continue
            count = await self._count(tx, name, table, tenant, subject_ref)
            if count:
                self._erase_table(effects, name, table, subject_ref)
                result.erased[name] = count
        self._settle_deferred(effects, subject_ref, request_id, holds)
        return result

    async def _count(
        self, tx: Transaction, name: str, table: TableMap, tenant: str, subject_ref: str
    ) -> int:
        row = await tx.fetchone(
            f"SELECT count(*) FROM {name} WHERE tenant_id = ? AND {table.subject_column} = ?",
            (tenant, subject_ref),
        )
        return int(row[0]) if row else 0

    def _erase_table(self, effects: Effects, name: str, table: TableMap, subject_ref: str) -> None:
        where = f"WHERE tenant_id = ? AND {table.subject_column} = ?"
        key = (effects.tenant_id, subject_ref)
        if table.erasure == "delete_row":
            effects.write(f"DELETE FROM {name} {where}", key)
        else:
            sets, params = self._column_actions(table)
            effects.write(f"UPDATE {name} SET {sets} {where}", (*params, *key))
        effects.audit("subject_data_erased", subject_ref, table=name, erasure=table.erasure)

    @staticmethod
    def _column_actions(table: TableMap) -> tuple[str, list[str | None]]:
        sets, params = [], []
        token = f"anon-{uuid.uuid4().hex}"  # random, unlinkable: de-identified, not hashed
        for column, spec in table.columns.items():
            value = {"null": None, "mask": MASK, "deidentify": token}.get(spec.erasure, "keep")
            if value == "keep":
                continue
            sets.append(f"{column} = ?")
            params.append(value)
        return ", ".join(sets), params

    def _restrict(
        self,
        effects: Effects,
        name: str,
        table: TableMap,
        subject_ref: str,
        request_id: str,
        hold: ActiveHold,
    ) -> None:
        until = hold.until.isoformat() if hold.until else None
        effects.write(
            RESTRICTION_UPSERT,
            (
                effects.tenant_id,
                subject_ref,
                name,
                "retention",
                hold.basis,
                request_id,
                effects.now.isoformat(),
                until,
            ),
        )
        effects.audit("subject_data_held", subject_ref, table=name, hold=hold.name, until=until)

    def _settle_deferred(
        self, effects: Effects, subject_ref: str, request_id: str, holds: dict[str, ActiveHold]
    ) -> None:
        key = (effects.tenant_id, subject_ref)
        for group in {t.hold_group for t in self.datamap.tables.values()}:
            hold = holds.get(group)
            if hold is None:
                effects.write(DEFERRED_DELETE, (*key, group))
                continue
            effects.write(
                DEFERRED_UPSERT,
                (
                    *key,
                    group,
                    request_id,
                    hold.basis,
                    hold.until.isoformat() if hold.until else None,
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
