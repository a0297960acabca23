"""``privacyops seed``: fill the platform's tables with synthetic debtors (demos, benchmarks).

It brings the store's schema up to date first: seeding is how a new store is
set up for a demo, never something run against a production store. Run twice, it
adds only the debtors that are not there yet (nothing doubles).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from infra import progress
from infra.cli import EXIT_OK, EXIT_USAGE, App, SubParsers
from infra.sources import Sources
from workers.platform.seed import seed, seed_source


def register(sub: SubParsers) -> None:
    seeder = sub.add_parser("seed", help="fill the store with synthetic debtors")
    seeder.add_argument("--tenants", default="acme", help="comma-separated tenant ids")
    seeder.add_argument(
        "--debtors", type=int, default=1_000, help="debtors per tenant (default 1000)"
    )
    seeder.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed makes the same debtors"
    )
    seeder.add_argument(
        "--source",
        help="a data source named in PRIVACYOPS_SOURCES: create the platform's tables there "
        "(if missing) and fill them, instead of the embedded store",
    )
    seeder.add_argument("--json", action="store_true", help="print the summary as JSON")
    seeder.set_defaults(handler=_seed)


def _seed(args: argparse.Namespace, app: App) -> int:
    tenants = [t.strip() for t in args.tenants.split(",") if t.strip()]
    if args.debtors < 1 or not tenants:
        print("privacyops: --debtors must be positive and --tenants non-empty", file=sys.stderr)
        return EXIT_USAGE

    if args.source and args.source not in app.settings.sources:
        print(f"privacyops: no source {args.source!r} in PRIVACYOPS_SOURCES", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        async with app.session(migrate=True) as opened:
            with progress.bar("seeding debtors", args.debtors * len(tenants)) as advance:
                if not args.source:
                    return await seed(opened.store, tenants, args.debtors, args.seed, advance)
                sources = Sources(app.settings, opened.store)
                try:
                    target = await sources.store(args.source)
                    return await seed_source(target, tenants, args.debtors, args.seed, advance)
                finally:
                    await sources.close()

    written = asyncio.run(run())
    if args.json:
        print(json.dumps({"tenants": tenants, "debtors": args.debtors, "rows": written}))
    else:
        print(
            f"seeded {args.debtors} debtor(s) per tenant for {', '.join(tenants)}: "
            f"{written} new rows"
        )
    return EXIT_OK
