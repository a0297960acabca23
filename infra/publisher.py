"""Client for upstream systems that publish to privacyops.

    async with Publisher("amqp://guest:guest@127.0.0.1:5672/") as publisher:
        await publisher.publish(ConsentChanged(tenant_id="acme", payload=...))

Every publish waits for the broker's confirm and is ``mandatory``: a nack
raises ``PublishNacked`` (retryable), a message no queue is bound for raises
``PublishRejected``, a lost or slow broker raises ``BrokerUnavailable``.
With a signing key (a key id and its secret, from the workers' keyring), each
message carries a signature over its body, routing key and signing time
(``messages/signing.py``) that the workers verify; ``user_id`` is set to the
URL's user, which the broker checks, so the workers know which broker account
published it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from types import TracebackType

from aio_pika.abc import AbstractRobustConnection

from config.settings import Settings
from infra import rabbit
from infra.keys import publisher_secret
from messages import signing
from messages.envelope import Envelope
from messages.errors import BrokerUnavailable
from messages.names import Names
from messages.registry import encode


class Publisher:
    """Publishes envelopes to the inbound topic exchange, routed by type."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        namespace: str = "privacyops",
        signing_key: str | None = None,
        key_id: str = "default",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        #: One address, or every node of a cluster (``rabbit.connect`` fails over).
        self._urls = [url] if isinstance(url, str) else list(url)
        self._exchange = Names(namespace).events
        self._signing_key = signing_key
        self._key_id = key_id
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._connection: AbstractRobustConnection | None = None
        self._publisher: rabbit.ConfirmedPublisher | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        """URL, namespace, timeout, TLS files, and the key from ``signing_key_id`` /
        ``signing_key`` or ``<key_dir>/publisher.json`` (``infra.keys.publisher_secret``)."""
        s = settings
        key = publisher_secret(s)
        context = None
        if s.amqp_ca_file or s.amqp_cert_file:
            context = rabbit.tls_context(s.amqp_ca_file, s.amqp_cert_file, s.amqp_key_file)
        return cls(
            s.broker_urls,
            namespace=s.namespace,
            signing_key=key.secret if key else None,
            key_id=key.key_id if key else "default",
            timeout=s.publish_timeout_s,
            ssl_context=context,
        )

    async def connect(self) -> None:
        self._connection = await rabbit.connect(
            self._urls, self._timeout, ssl_context=self._ssl_context
        )
        channel = await rabbit.open_channel(self._connection, confirms=True)
        self._publisher = rabbit.ConfirmedPublisher(
            channel, self._timeout, user_id=rabbit.url_user(self._urls[0])
        )

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def publish(self, message: Envelope) -> None:
        """Publish one message; returns once the broker has confirmed it."""
        await self.publish_raw(
            encode(message), message.type, str(message.message_id), message.correlation_id
        )

    async def publish_raw(
        self,
        body: bytes,
        routing_key: str,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Publish bytes as they are (tools and tests use it for malformed input)."""
        if self._publisher is None:
            raise BrokerUnavailable("publisher is not connected")
        headers = (
            signing.headers(body, routing_key, self._key_id, self._signing_key, int(time.time()))
            if self._signing_key
            else {}
        )
        await self._publisher.publish(
            self._exchange,
            routing_key,
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            headers=headers,
        )
