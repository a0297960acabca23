"""Who sent a message, and whether that sender may send it (README "Security model").

Checked by the consumer for every delivery, before the handler runs:

1. **Signature** (``messages/signing.py``): the key id must be in the keyring and
   not past its ``not_after``; the HMAC covers the body, the routing key (for a
   retry or an admin replay: the original one, kept in ``x-privacyops-routing-key``)
   and the signing time.
2. **Freshness**: on the public events exchange, a signature older than
   ``replay_window_s`` (or more than 5 minutes ahead) is refused. Messages that
   come back through the internal exchange (retry tiers, ``privacyops dlq
   replay``) skip this check: only privacyops' own broker users may publish there
   (``privacyops broker users``), so an old message returns only when an admin
   replays it.
3. **Broker user**: on the events exchange, the AMQP ``user_id`` (which the
   broker refuses unless it is the publishing connection's user) must be one of
   ``publisher_users`` when that is set, and one of the key's ``broker_users``
   when those are set.
4. **Scope** (after decoding): the key's tenants and types; a message that only
   asserts a verified identity (``dsr.verified``) needs ``may_assert_verification``;
   any other assertion (``identity_verified: true``) from such a key is passed to the
   handler as not honoured (``Effects.may_assert_verification``).

Internal message types (``notice.send``, ``admin.action``) are bound to the internal
exchange only and are not signed by a publisher key: they are authenticated by the
broker's permissions and ``user_id``.

Without a keyring (tests, development with ``allow_unsigned``) nothing is checked
and every sender may assert verification: ``privacyops run`` refuses to start that
way unless told it is a development run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from config.keyring import Keyring, PublisherKey
from config.settings import Settings
from infra.headers import H_ROUTING_KEY
from infra.runtime.worker import Sender
from messages.envelope import Envelope
from messages.errors import SignatureInvalid, Unauthorized
from messages.names import Names
from messages.registry import publisher_of
from messages.signing import KEY_ID_HEADER, SIGNATURE_HEADER, SIGNED_AT_HEADER, text_header, verify

#: How far ahead of this clock a signature may be dated.
MAX_SKEW_S = 300


@dataclass(frozen=True)
class Authenticated:
    """The result of ``check``: the key that signed (None when unsigned) and the sender."""

    key: PublisherKey | None
    sender: Sender | None
    #: Taken as an internal message (not signed): its decoded type must be internal too.
    internal: bool = False


class Authenticator:
    """Checks signatures, freshness, broker users and scopes against one keyring."""

    def __init__(self, settings: Settings, keyring: Keyring | None, names: Names) -> None:
        self._settings = settings
        self._keyring = keyring
        self._names = names

    @property
    def enabled(self) -> bool:
        """Whether signatures are checked (the broker user is checked either way)."""
        return self._keyring is not None

    def check(self, raw: AbstractIncomingMessage, now: datetime | None = None) -> Authenticated:
        """Signature, freshness and broker user; raises ``SignatureInvalid``/``Unauthorized``."""
        on_events = raw.exchange == self._names.events
        allowed = self._settings.publisher_users
        if on_events and allowed and raw.user_id not in allowed:
            raise Unauthorized("published by a broker user that may not publish events")
        if self._keyring is None:  # development: anyone may assert, the user is still known
            return Authenticated(None, Sender(None, True, raw.user_id))
        headers: dict[str, Any] = dict(raw.headers or {})
        routing_key = text_header(headers.get(H_ROUTING_KEY)) or raw.routing_key or ""
        if publisher_of(routing_key) == "internal" and raw.exchange != self._names.events:
            return Authenticated(None, Sender(None, False, raw.user_id), internal=True)
        key_id = text_header(headers.get(KEY_ID_HEADER))
        signed_at = headers.get(SIGNED_AT_HEADER)
        given = headers.get(SIGNATURE_HEADER)
        if given is None or key_id is None:
            raise SignatureInvalid("signature header missing")
        if not isinstance(signed_at, int) or isinstance(signed_at, bool):
            raise SignatureInvalid("signing time missing or not an integer")
        key = self._keyring.get(key_id)
        now = now or datetime.now(UTC)
        if key is None or key.expired(now):
            raise SignatureInvalid("signing key unknown or expired")
        if not verify(
            raw.body, routing_key, key_id, signed_at, given, key.secret.get_secret_value()
        ):
            raise SignatureInvalid("signature does not match the message")
        if on_events:
            self._fresh(signed_at, now)
            if key.broker_users and raw.user_id not in key.broker_users:
                raise Unauthorized("published by a broker user this key does not belong to")
        return Authenticated(key, Sender(key.key_id, key.may_assert_verification, raw.user_id))

    def _fresh(self, signed_at: int, now: datetime) -> None:
        age = now.timestamp() - signed_at
        if age > self._settings.replay_window_s:
            raise SignatureInvalid(
                "signed longer ago than the replay window; an admin may replay it"
            )
        if age < -MAX_SKEW_S:
            raise SignatureInvalid("signed in the future")

    @staticmethod
    def authorize(found: Authenticated, message: Envelope) -> None:
        """The key's scopes: tenant, type, and a bare assertion of verified identity."""
        if found.internal and publisher_of(message.type) != "internal":
            raise SignatureInvalid("signature header missing")
        key = found.key
        if key is None:
            return
        if not key.allows_tenant(message.tenant_id):
            raise Unauthorized("the signing key may not send for this tenant")
        if not key.allows_type(message.type):
            raise Unauthorized("the signing key may not send this message type")
        if message.only_asserts_identity and not key.may_assert_verification:
            raise Unauthorized("the signing key may not assert a verified identity")
