"""``privacyops audit``: verify the chain, checkpoint it, export and check bundles, prune.

    privacyops audit verify [--tenant T] [--json]      exit 1 on the first break
    privacyops audit checkpoint [--tenant T]           sign and publish the heads now
    privacyops audit export --tenant T (--subject REF | --request ID | --since/--until)
                            --out DIR                  a signed bundle (infra/audit/bundle.py)
    privacyops audit verify-bundle DIR [--public-key HEX]   offline: no store needed
    privacyops audit public-key                        the key a third party checks with
    privacyops audit prune [--tenant T]                drop segments past retention

Nothing printed names a person: rows are named by id, seq and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from infra.audit import bundle, checkpoints, proof, retention
from infra.audit.verify import Report, verify
from infra.cli import EXIT_FAILED, EXIT_OK, App, SubParsers
from infra.keys import Keys


def register(sub: SubParsers) -> None:
    audit = sub.add_parser(
        "audit", help="the audit trail: verify, checkpoint, export"
    ).add_subparsers(dest="audit_action", required=True)
    check = audit.add_parser("verify", help="walk the hash chain; exit 1 on a break")
    check.add_argument("--tenant", help="only this tenant's chain (default: every tenant)")
    check.add_argument("--json", action="store_true", help="print the result per tenant as JSON")
    check.set_defaults(handler=_verify)
    point = audit.add_parser("checkpoint", help="sign each tenant's chain head and publish it")
    point.add_argument("--tenant", help="only this tenant's chain (default: every tenant)")
    point.set_defaults(handler=_checkpoint)
    export = audit.add_parser("export", help="a signed bundle of audit rows for a third party")
    export.add_argument("--tenant", required=True, help="the tenant whose rows to export")
    export.add_argument("--subject", dest="subject_ref", help="only rows about this subject ref")
    export.add_argument("--request", dest="request_id", help="only rows of this request id")
    export.add_argument("--since", type=_moment, help="ISO 8601 time (UTC if no offset)")
    export.add_argument("--until", type=_moment, help="ISO 8601 time, exclusive")
    export.add_argument("--out", type=Path, required=True, help="a new folder for the bundle")
    export.set_defaults(handler=_export)
    offline = audit.add_parser("verify-bundle", help="check a bundle offline (no store)")
    offline.add_argument("bundle", type=Path, help="the bundle folder written by audit export")
    offline.add_argument("--public-key", help="the operator's audit public key (hex)")
    offline.set_defaults(handler=_verify_bundle)
    key = audit.add_parser("public-key", help="print the audit key id and public key (hex)")
    key.set_defaults(handler=_public_key)
    prune = audit.add_parser("prune", help="drop whole segments past retention.toml's audit_years")
    prune.add_argument("--tenant", help="only this tenant's chain (default: every tenant)")
    prune.set_defaults(handler=_prune)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _verify(args: argparse.Namespace, app: App) -> int:
    keys = Keys.from_settings(app.settings).audit.public_keys
    reports = app.with_store(lambda store: verify(store, keys, args.tenant))
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for report in reports:
            print(_line(report))
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def _line(r: Report) -> str:
    seen = f"{r.rows} rows (seq {r.base_seq + 1}..{r.head_seq}), {r.checkpoints} checkpoints"
    if r.unchained:
        seen += f", {r.unchained} written before the chain"
    if r.broken is None:
        return f"tenant {r.tenant_id}: ok, {seen}"
    b = r.broken
    return (
        f"tenant {r.tenant_id}: BROKEN at row id {b.id} (seq {b.seq}, recorded {b.recorded_at}):"
        f" {b.problem}: {b.detail}"
    )


def _checkpoint(args: argparse.Namespace, app: App) -> int:
    async def run() -> int:
        async with app.session(broker=True) as opened:
            chosen = [args.tenant] if args.tenant else None
            made = await checkpoints.make(opened.store, opened.keys.audit, opened.outboxes, chosen)
        for c in made:
            print(f"tenant {c.tenant_id}: checkpoint seq {c.seq} {c.row_hash} key {c.key_id}")
        if not made:
            print("no chain head moved since its last checkpoint")
        return EXIT_OK

    return asyncio.run(run())


def _export(args: argparse.Namespace, app: App) -> int:
    selection = bundle.Selection(args.subject_ref, args.request_id, args.since, args.until)

    async def run() -> tuple[Path, int]:
        async with app.session(broker=True) as opened:
            return await bundle.export(
                opened.store, opened.keys.audit, opened.outboxes, args.tenant, selection, args.out
            )

    folder, count = asyncio.run(run())
    print(f"{count} rows exported to {folder}; check with: privacyops audit verify-bundle {folder}")
    return EXIT_OK


def _verify_bundle(args: argparse.Namespace, app: App) -> int:
    return proof.main(
        [str(args.bundle), *(["--public-key", args.public_key] if args.public_key else [])]
    )


def _public_key(args: argparse.Namespace, app: App) -> int:
    signer = Keys.from_settings(app.settings).audit
    for key_id, public in signer.public_keys.items():
        print(f"{key_id} ed25519 {public.hex()}")
    return EXIT_OK


def _prune(args: argparse.Namespace, app: App) -> int:
    years = retention.audit_years(app.settings)

    async def run() -> list[retention.Pruned]:
        async with app.session() as opened:
            return await retention.prune(
                opened.store, opened.keys.audit.public_keys, years, args.tenant
            )

    for pruned in asyncio.run(run()):
        print(f"tenant {pruned.tenant_id}: {pruned.rows} rows up to seq {pruned.seq} pruned")
    return EXIT_OK
