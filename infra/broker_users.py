"""Least-privilege broker accounts, one per role (``privacyops broker users``).

* publisher: configure nothing; write ``ns.events`` only, and there (topic
  permission) only the inbound types; read nothing.
* worker: configure, write and read ``ns.*`` (it declares its own topology).
* admin: configure the DLQ locks; write ``ns.internal``, ``ns.events`` and the
  DLQs (through the default exchange); read the DLQs and their locks.

So a publisher account cannot declare a queue, read a dead-letter queue or
publish on the internal exchange (``notice.send``, ``admin.action``, retries), and
can publish only the upstream types (``consent.changed``, ``dsr.*``,
``security.alert``) on the events exchange. Every privacyops client sets the AMQP
``user_id`` to its own user; the broker refuses a ``user_id`` that is not the
connection's user, so a worker can tell which account published a message
(``publisher_users``, a key's ``broker_users``) and an admin's audit event names
the account the broker authenticated.

The command writes a RabbitMQ definitions file (users with salted SHA-256 password
hashes, permissions, topic permissions; ``rabbitmqctl import_definitions FILE``)
and a passwords file (0600). It never changes the broker itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from messages.names import Names
from messages.registry import MESSAGE_TYPES

ROLES = ("publisher", "worker", "admin")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    configure: str
    write: str
    read: str
    topic_write: str | None = None
    password: str = field(default="", repr=False)


def inbound_types() -> list[str]:
    """The types upstream systems publish (the only ones a publisher may send)."""
    return sorted(name for name, (_, who) in MESSAGE_TYPES.items() if who == "upstream")


def accounts(names: Names, prefix: str | None = None) -> list[Account]:
    """One account per role for the namespace, each with a fresh random password."""
    ns = re.escape(names.namespace)
    base = prefix or names.namespace
    types = "|".join(re.escape(t) for t in inbound_types())
    dlq = rf"{ns}\.[^.]+\.dlq"
    return [
        Account(
            f"{base}-publisher",
            "publisher",
            configure="^$",
            write=rf"^{ns}\.events$",
            read="^$",
            topic_write=rf"^({types})$",
            password=secrets.token_urlsafe(24),
        ),
        Account(
            f"{base}-worker",
            "worker",
            configure=rf"^{ns}\.",
            write=rf"^{ns}\.",
            read=rf"^{ns}\.",
            password=secrets.token_urlsafe(24),
        ),
        Account(
            f"{base}-admin",
            "admin",
            configure=rf"^{dlq}\.lock$",
            write=rf"^({ns}\.internal|{ns}\.events|{dlq}|amq\.default)$",
            read=rf"^{dlq}(\.lock)?$",
            topic_write=".*",
            password=secrets.token_urlsafe(24),
        ),
    ]


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + SHA-256(salt + pw))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(found: list[Account], names: Names, vhost: str = "/") -> dict[str, Any]:
    """A definitions document for ``rabbitmqctl import_definitions``."""
    return {
        "users": [
            {
                "name": a.name,
                "password_hash": password_hash(a.password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
            for a in found
        ],
        "permissions": [
            {
                "user": a.name,
                "vhost": vhost,
                "configure": a.configure,
                "write": a.write,
                "read": a.read,
            }
            for a in found
        ],
        "topic_permissions": [
            {
                "user": a.name,
                "vhost": vhost,
                "exchange": names.events,
                "write": a.topic_write,
                "read": ".*",
            }
            for a in found
            if a.topic_write is not None
        ],
    }
