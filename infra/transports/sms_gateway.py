"""SMS through an HTTP gateway (aiohttp), errors translated at the edge.

    POST <sms_gateway_url>
    Authorization: Bearer <sms_gateway_token>
    Idempotency-Key: <notice_id>
    {"from": <tenant sender id>, "to": <E.164 number>, "text": ..., "reference": <notice_id>}

The gateway answers 2xx (optionally ``{"id": ...}``). The idempotency key makes
a resend after a crash a no-op at the gateway, so an SMS is delivered once.

    2xx                         -> sent
    408, 425, 429, 5xx, network -> ProviderUnavailable (retryable)
    other 4xx                   -> ProviderRejected (permanent; invalid number...)
"""

from __future__ import annotations

from typing import Any

import aiohttp

from config.settings import Settings
from infra.transports.base import Sms, TokenBucket, normalise_phone
from messages.errors import ProviderRejected, ProviderUnavailable

_RETRYABLE = frozenset({408, 425, 429})


class HttpSmsSender:
    transport = "http"

    def __init__(self, settings: Settings) -> None:
        if not settings.sms_gateway_url:
            raise ValueError("notify_sms_transport=http needs sms_gateway_url")
        self._url = settings.sms_gateway_url
        self._token = settings.sms_gateway_token
        self._timeout = aiohttp.ClientTimeout(total=settings.notify_timeout_s)
        self._bucket = TokenBucket(settings.sms_rate_per_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, sms: Sms) -> str:
        to = normalise_phone(sms.to)
        await self._bucket.acquire()
        headers = {"Idempotency-Key": sms.notice_id}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        body = {"from": sms.sender_id, "to": to, "text": sms.text, "reference": sms.notice_id}
        try:
            async with self._client().post(self._url, json=body, headers=headers) as response:
                status = response.status
                answer: Any = await response.json(content_type=None) if status < 300 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"sms gateway unavailable: {type(exc).__name__}") from exc
        if status in _RETRYABLE or status >= 500:
            raise ProviderUnavailable(f"sms gateway: http {status}")
        if status >= 300:
            raise ProviderRejected(f"sms gateway refused the message: http {status}")
        reference = answer.get("id") if isinstance(answer, dict) else None
        return str(reference) if reference else sms.notice_id

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
