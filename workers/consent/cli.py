"""``privacyops consent check|may-ask``: the suppression checks, for scripts and senders.

* ``consent check TENANT SUBJECT CHANNEL [--purpose P]``: exit 0 (``contactable``)
  when the tenant may contact the subject on the channel for the purpose now, 1
  (``suppressed``) when not. The purpose defaults to ``direct_marketing``.
* ``consent may-ask TENANT SUBJECT``: exit 0 (``may ask``) unless the person
  refused when asked before (POPIA s69(2)(a)), then 1 (``never ask``).
"""

from __future__ import annotations

import argparse
import json

from infra.cli import EXIT_FAILED, EXIT_OK, App, SubParsers
from infra.store import Store
from messages.consent import DIRECT_MARKETING
from workers.consent.tables import is_contactable, may_ask
from workers.platform.keys import digest_key


def register(sub: SubParsers) -> None:
    consent = sub.add_parser("consent", help="consent queries").add_subparsers(
        dest="consent_action", required=True
    )
    check = consent.add_parser("check", help="may the tenant contact the subject now?")
    check.add_argument("tenant", help="the tenant id")
    check.add_argument("subject_ref", help="the subject's opaque reference")
    check.add_argument("channel", help="email, sms, phone, post...")
    check.add_argument(
        "--purpose", default=DIRECT_MARKETING, help=f"the purpose (default {DIRECT_MARKETING})"
    )
    check.add_argument("--json", action="store_true", help="print the answer as JSON")
    check.set_defaults(handler=_check)
    ask = consent.add_parser("may-ask", help="may the tenant ask the person for consent?")
    ask.add_argument("tenant", help="the tenant id")
    ask.add_argument("subject_ref", help="the subject's opaque reference")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
    ask.set_defaults(handler=_may_ask)


def _check(args: argparse.Namespace, app: App) -> int:
    key = digest_key(app.settings)

    async def check(store: Store) -> bool:
        return await is_contactable(
            store, args.tenant, args.subject_ref, args.channel, args.purpose, digest_key=key
        )

    contactable = app.with_store(check)
    answer = "contactable" if contactable else "suppressed"
    print(json.dumps({"answer": answer, "contactable": contactable}) if args.json else answer)
    return EXIT_OK if contactable else EXIT_FAILED


def _may_ask(args: argparse.Namespace, app: App) -> int:
    key = digest_key(app.settings)

    async def check(store: Store) -> bool:
        return await may_ask(store, args.tenant, args.subject_ref, digest_key=key)

    allowed = app.with_store(check)
    answer = "may ask" if allowed else "never ask"
    print(json.dumps({"answer": answer, "may_ask": allowed}) if args.json else answer)
    return EXIT_OK if allowed else EXIT_FAILED
