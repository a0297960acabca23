"""Client for upstream systems that publish to privacyops.

    async with Publisher("amqp://guest:guest@127.0.0.1:5672/") as publisher:
        await publisher.publish(ConsentChanged(tenant_id="acme", payload=...))

Every publish waits for the broker's confirm and is ``mandatory``: a nack
raises ``PublishNacked`` (retryable), a message no queue is bound for raises
``PublishRejected``, a lost or slow broker raises ``BrokerUnavailable``.
With a signing key, each body carries an HMAC-SHA256 signature the workers
verify.
"""

from __future__ import annotations

from types import TracebackType

from aio_pika.abc import AbstractRobustConnection

from config.settings import Settings
from infra import rabbit
from messages.envelope import Envelope
from messages.errors import BrokerUnavailable
from messages.names import Names
from messages.registry import encode
from messages.signing import SIGNATURE_HEADER, sign


class Publisher:
    """Publishes envelopes to the inbound topic exchange, routed by type."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "privacyops",
        signing_key: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._exchange = Names(namespace).events
        self._signing_key = signing_key
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._publisher: rabbit.ConfirmedPublisher | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        key = settings.signing_key.get_secret_value() if settings.signing_key else None
        return cls(
            settings.amqp_url.get_secret_value(),
            namespace=settings.namespace,
            signing_key=key,
            timeout=settings.publish_timeout_s,
        )

    async def connect(self) -> None:
        self._connection = await rabbit.connect(self._url, self._timeout)
        channel = await rabbit.open_channel(self._connection, confirms=True)
        self._publisher = rabbit.ConfirmedPublisher(channel, self._timeout)

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
        headers = {SIGNATURE_HEADER: sign(body, self._signing_key)} if self._signing_key else {}
        await self._publisher.publish(
            self._exchange,
            routing_key,
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            headers=headers,
        )
