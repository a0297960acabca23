"""``privacyops keys ...`` and ``privacyops broker users``: keys and broker accounts.

    privacyops keys dev                      development keys under key_dir (quick start)
    privacyops keys add KEY_ID [--tenant T ...] [--type T ...] [--may-assert-verification]
                          [--broker-user U ...] [--not-after ISO]
                                             a new publisher key; its secret goes to stdout once
    privacyops keys remove KEY_ID            retire a publisher key (rotation's last step)
    privacyops keys rotate-exports           re-encrypt every export package under the newest key
    privacyops broker users --definitions FILE --passwords FILE [--prefix NAME]

Key files are created atomically with mode 0600 in a 0700 directory and refused
when anyone else may read them (``config/secrets.py``). Secrets are printed only
by ``keys add`` (to standard output, once) and written only to new 0600 files.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from config.keyring import Keyring, PublisherKey, load_keyring
from config.secrets import create_secret, write_private
from infra import broker_users
from infra.cli import EXIT_OK, App, SubParsers
from infra.keys import Keys, create_dev_keys
from messages.names import Names


def register(sub: SubParsers) -> None:
    keys = sub.add_parser("keys", help="publisher keys and keys at rest").add_subparsers(
        dest="keys_action", required=True
    )
    keys.add_parser("dev", help="development keys under key_dir").set_defaults(handler=_dev)
    add = keys.add_parser("add", help="a new publisher key (prints its secret once)")
    add.add_argument("key_id", help="the new key's id (signatures name it)")
    add.add_argument(
        "--tenant",
        action="append",
        dest="tenants",
        default=None,
        help="a tenant the key may publish for (repeatable; default: every tenant)",
    )
    add.add_argument(
        "--type",
        action="append",
        dest="types",
        default=None,
        help="a message type the key may publish (repeatable; default: every type)",
    )
    add.add_argument(
        "--may-assert-verification",
        action="store_true",
        help="the key may assert a verified identity (dsr.verified)",
    )
    add.add_argument(
        "--broker-user",
        action="append",
        dest="broker_users",
        default=[],
        help="a broker user that may publish with this key (repeatable)",
    )
    add.add_argument("--not-after", help="ISO 8601 time the key stops being valid")
    add.set_defaults(handler=_add)
    remove = keys.add_parser("remove", help="retire a publisher key")
    remove.add_argument("key_id", help="the key to retire")
    remove.set_defaults(handler=_remove)
    rotate = keys.add_parser("rotate-exports", help="re-encrypt packages under the newest key")
    rotate.set_defaults(handler=_rotate_exports)
    broker = sub.add_parser("broker", help="broker accounts").add_subparsers(
        dest="broker_action", required=True
    )
    users = broker.add_parser("users", help="one least-privilege account per role")
    users.add_argument("--definitions", type=Path, required=True, help="new file (0600)")
    users.add_argument("--passwords", type=Path, required=True, help="new file (0600)")
    users.add_argument("--prefix", help="account name prefix (default: the namespace)")
    users.set_defaults(handler=_users)


def _dev(args: argparse.Namespace, app: App) -> int:
    for path in create_dev_keys(app.settings):
        print(f"created {path}")
    print(f"development keys in {app.settings.key_dir}")
    return EXIT_OK


def _keyring_path(app: App) -> Path:
    return app.settings.key_path(app.settings.signing_keys_file, "signing-keys.json")


def _save(path: Path, keyring: Keyring) -> None:
    """Replace the keyring atomically (a new 0600 file renamed over the old one)."""
    data = json.dumps(
        {
            "keys": [
                {**k.model_dump(mode="json"), "secret": k.secret.get_secret_value()}
                for k in keyring.keys
            ]
        },
        indent=2,
    ).encode()
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    create_secret(fresh, data)
    fresh.replace(path)


def _add(args: argparse.Namespace, app: App) -> int:
    path = _keyring_path(app)
    existing = list(load_keyring(path).keys) if path.exists() else []
    secret = secrets.token_urlsafe(32)
    key = PublisherKey.model_validate(
        {
            "key_id": args.key_id,
            "secret": secret,
            "tenants": args.tenants or ["*"],
            "types": args.types or ["*"],
            "may_assert_verification": args.may_assert_verification,
            "broker_users": args.broker_users,
            "not_after": args.not_after,
        }
    )
    if any(k.key_id == key.key_id for k in existing):
        raise ValueError(f"key {key.key_id} exists; add a new key id to rotate")
    _save(path, Keyring(keys=[*existing, key]))
    print(json.dumps({"key_id": key.key_id, "secret": secret}))
    print(f"added {key.key_id} to {path}; give the secret to its publisher only", file=sys.stderr)
    return EXIT_OK


def _remove(args: argparse.Namespace, app: App) -> int:
    path = _keyring_path(app)
    keyring = load_keyring(path)
    kept = [k for k in keyring.keys if k.key_id != args.key_id]
    if len(kept) == len(keyring.keys):
        raise ValueError(f"no key {args.key_id}")
    if not kept:
        raise ValueError("the keyring would be empty; add the new key first")
    _save(path, Keyring(keys=kept))
    print(f"removed {args.key_id}")
    return EXIT_OK


def _rotate_exports(args: argparse.Namespace, app: App) -> int:
    sealer = Keys.from_settings(app.settings).export
    count = 0
    for path in sorted(app.settings.export_dir.rglob("*.zip.enc")):
        token = path.read_bytes().strip()
        fresh = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
        create_secret(fresh, sealer.rotate(token))
        fresh.replace(path)
        count += 1
    print(f"re-encrypted {count} package(s) under the newest export key")
    return EXIT_OK


def _users(args: argparse.Namespace, app: App) -> int:
    names = Names(app.settings.namespace)
    found = broker_users.accounts(names, args.prefix)
    document = broker_users.definitions(found, names)
    passwords = {a.name: {"role": a.role, "password": a.password} for a in found}
    write_private(args.passwords, json.dumps(passwords, indent=2).encode())
    write_private(args.definitions, json.dumps(document, indent=2).encode())
    for account in found:
        print(f"{account.role:<10} {account.name}")
    print(f"import with: rabbitmqctl import_definitions {args.definitions}", file=sys.stderr)
    return EXIT_OK
