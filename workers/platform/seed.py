"""Synthetic, realistic platform data for demos and benchmarks (``privacyops seed``).

Every value is invented: South African ID numbers with a valid check digit,
+27 mobile numbers, e-mail addresses at example domains. The random generator
is seeded, so the same arguments give the same store.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

from infra.store import Store
from infra.store.migrations import to_postgresql
from messages.dsr import luhn_ok
from workers.platform.tables import SOURCE_TABLES

FIRST = [
    "Thandi",
    "Sipho",
    "Lerato",
    "Johan",
    "Ayesha",
    "Pieter",
    "Nomsa",
    "Kagiso",
    "Anele",
    "Riaan",
    "Zanele",
    "Mohammed",
    "Lindiwe",
    "Themba",
    "Priya",
    "Willem",
    "Naledi",
    "Bongani",
]
LAST = [
    "Nkosi",
    "Dlamini",
    "van der Merwe",
    "Botha",
    "Naidoo",
    "Mokoena",
    "Pillay",
    "Khumalo",
    "Smith",
    "Ndlovu",
    "Mahlangu",
    "Venter",
    "Zulu",
    "Govender",
    "Mthembu",
    "Pretorius",
]
CREDITORS = ["Ubuntu Bank", "Karoo Retail", "Highveld Telecom", "Cape Furnishers", "Metro Water"]
MOBILE = ["60", "61", "62", "63", "71", "72", "73", "74", "76", "78", "79", "81", "82", "83", "84"]
STATUSES = ["open"] * 45 + ["closed"] * 30 + ["written_off"] * 15 + ["prescribed"] * 10
TODAY = date(2026, 11, 1)


def sa_id_number(rng: random.Random, born: date) -> str:
    """YYMMDD, a sequence (gender), citizenship 0, 8, and the Luhn check digit."""
    body = f"{born:%y%m%d}{rng.randint(0, 9999):04d}08"
    return next(body + str(d) for d in range(10) if luhn_ok(body + str(d)))


def mobile(rng: random.Random) -> str:
    return f"+27{rng.choice(MOBILE)}{rng.randint(0, 9_999_999):07d}"


def _day(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, max((end - start).days, 0)))


class Seeder:
    """Generates one tenant's debtors with everything the data map covers."""

    def __init__(self, tenant: str, seed: int) -> None:
        self.tenant = tenant
        self.rng = random.Random(f"{tenant}:{seed}")
        self.rows: dict[str, list[tuple[object, ...]]] = {}

    def _add(self, table: str, row: tuple[object, ...]) -> None:
        self.rows.setdefault(table, []).append(row)

    def debtor(self, index: int) -> None:
        rng, t = self.rng, self.tenant
        ref = f"{t}-d{index:07d}"
        born = _day(rng, date(1950, 1, 1), date(2004, 12, 31))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created = datetime(2024, 1, 1, tzinfo=UTC).isoformat()
        self._add(
            "debtors", (t, ref, first, last, sa_id_number(rng, born), born.isoformat(), created)
        )
        email = f"{first}.{last}.{index}@example.co.za".lower().replace(" ", "")
        self._add("contact_points", (t, ref, "email", email, 1))
        self._add("contact_points", (t, ref, "phone", mobile(rng), 1))
        if rng.random() < 0.3:
            self._add(
                "contact_points",
                (t, ref, "postal", f"{rng.randint(1, 400)} Main Road, Durban, 4001", 0),
            )
        for _ in range(rng.choice([1, 1, 2, 3])):
            # a random id: an account id built from the subject_ref would lead back to the
            # subject from every payment kept de-identified after an erasure
            self._account(ref, f"acc-{rng.getrandbits(48):012x}")
        for _ in range(rng.randint(0, 3)):
            sent = _day(rng, date(2023, 1, 1), TODAY).isoformat()
            self._add(
                "communications",
                (t, ref, rng.choice(["sms", "email", "letter", "call"]), sent, "Payment reminder"),
            )
        if rng.random() < 0.3:
            self._add(
                "notes", (t, ref, "agent-17", TODAY.isoformat(), "Debtor asked for a payment plan")
            )

    def _account(self, ref: str, account_id: str) -> None:
        rng, t = self.rng, self.tenant
        status = rng.choice(STATUSES)
        opened = _day(rng, date(2012, 1, 1), date(2026, 6, 1))
        last_paid = _day(rng, opened, TODAY) if rng.random() < 0.8 else None
        closed = _day(rng, opened, TODAY) if status != "open" else None
        debt_type = "ordinary" if rng.random() < 0.9 else "bill_of_exchange"
        self._add(
            "accounts",
            (
                account_id,
                t,
                ref,
                rng.choice(CREDITORS),
                f"REF{rng.randint(100000, 999999)}",
                debt_type,
                rng.randint(5_000, 5_000_000),
                status,
                opened.isoformat(),
                closed.isoformat() if closed else None,
                last_paid.isoformat() if last_paid else None,
            ),
        )
        for _ in range(rng.randint(0, 4)):
            paid = _day(rng, opened, TODAY).isoformat()
            self._add(
                "payments",
                (
                    t,
                    ref,
                    account_id,
                    rng.randint(10_000, 500_000),
                    paid,
                    rng.choice(["debit_order", "eft", "cash"]),
                    f"BANK{rng.randint(10**8, 10**9)}",
                ),
            )


INSERTS = {
    "debtors": "INSERT INTO debtors (tenant_id, subject_ref, first_name, last_name,"
    " id_number, date_of_birth, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, subject_ref) DO NOTHING",
    "contact_points": "INSERT INTO contact_points (tenant_id, subject_ref, kind, value,"
    " is_primary) VALUES (?, ?, ?, ?, ?)",
    "accounts": "INSERT INTO accounts (account_id, tenant_id, subject_ref, creditor,"
    " reference, debt_type, balance_cents, status, opened_on, closed_on, last_payment_on)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, account_id) DO NOTHING",
    "payments": "INSERT INTO payments (tenant_id, subject_ref, account_id, amount_cents, paid_on,"
    " method, bank_reference) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "communications": "INSERT INTO communications (tenant_id, subject_ref, channel, sent_at,"
    " summary) VALUES (?, ?, ?, ?, ?)",
    "notes": "INSERT INTO notes (tenant_id, subject_ref, author, written_at, body)"
    " VALUES (?, ?, ?, ?, ?)",
}


def chunks(tenant: str, debtors: int, seed: int, size: int = 5_000) -> Iterator[Seeder]:
    seeder = Seeder(tenant, seed)
    for index in range(debtors):
        seeder.debtor(index)
        if (index + 1) % size == 0:
            yield seeder
            seeder.rows = {}
    if seeder.rows:
        yield seeder


#: Where each table's row holds the subject_ref (accounts lead with their own id).
SUBJECT_AT = {"accounts": 2}


async def seed(
    store: Store,
    tenants: list[str],
    debtors: int,
    seed_value: int = 1,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Fill the store; return the number of rows written. Debtors already in the store
    (a second run) are skipped whole, so nothing (contact points, payments...) doubles.
    ``advance(n)`` is told of every ``n`` debtors done (a progress bar)."""
    written = 0
    for tenant in tenants:
        async with store.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT subject_ref FROM debtors WHERE tenant_id = ?", (tenant,)
            )
        present = {str(r[0]) for r in rows}
        for chunk in chunks(tenant, debtors, seed_value):
            async with store.transaction() as tx:
                for table, found in chunk.rows.items():
                    fresh = [r for r in found if r[SUBJECT_AT.get(table, 1)] not in present]
                    tx.stage_all((INSERTS[table], row) for row in fresh)
                    written += len(fresh)
            if advance is not None:
                advance(len({r[1] for r in chunk.rows.get("debtors", [])}))
    return written


async def seed_source(
    store: Store,
    tenants: list[str],
    debtors: int,
    seed_value: int = 1,
    advance: Callable[[int], None] | None = None,
) -> int:
    """A platform database of its own (a data source, issue 13): its tables created if
    missing (``SOURCE_TABLES``), then filled like the embedded store; rows written."""
    ddl = SOURCE_TABLES if store.dialect == "sqlite" else to_postgresql(SOURCE_TABLES)
    async with store.transaction() as tx:
        await tx.execute_script(ddl)
    return await seed(store, tenants, debtors, seed_value, advance)
