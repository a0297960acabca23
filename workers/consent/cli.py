"""``privacyops consent check TENANT SUBJECT CHANNEL``: the suppression check, for scripts.

Exit code 0 when the tenant may market to the subject on the channel now, 1 when not.
"""

from __future__ import annotations

import argparse

from infra.cli import EXIT_FAILED, EXIT_OK, App, SubParsers
from infra.store import Store
from workers.consent.tables import is_contactable


def register(sub: SubParsers) -> None:
    consent = sub.add_parser("consent", help="consent queries")
    consent.add_argument("action", choices=["check"])
    consent.add_argument("tenant")
    consent.add_argument("subject_ref")
    consent.add_argument("channel")
    consent.set_defaults(handler=_check)


def _check(args: argparse.Namespace, app: App) -> int:
    async def check(store: Store) -> bool:
        return await is_contactable(store, args.tenant, args.subject_ref, args.channel)

    contactable = app.with_store(check)
    print("contactable" if contactable else "suppressed")
    return EXIT_OK if contactable else EXIT_FAILED
