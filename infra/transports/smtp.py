"""E-mail over SMTP (aiosmtplib), errors translated at the edge.

STARTTLS (or implicit TLS) and authentication come from the settings; the
password is a ``SecretStr``. Each notice is one SMTP session: simple, and a
lost connection never leaves a half-sent batch. The ``Message-ID`` is derived
from the notice_id, so a resend after a crash is recognisably the same message.

    5xx for a recipient or the data     -> ProviderRejected (permanent)
    4xx, connection refused, timeouts   -> ProviderUnavailable (retryable)
    authentication or sender refused    -> ProviderUnavailable: a configuration
                                           fault, not the notice's; it retries
                                           and then dead-letters, never silently
"""

from __future__ import annotations

import ssl

import aiosmtplib

from config.settings import Settings
from infra.transports.base import Email, TokenBucket, check_email, compose
from messages.errors import ProviderRejected, ProviderUnavailable


class SmtpSender:
    transport = "smtp"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bucket = TokenBucket(settings.smtp_rate_per_s)
        self._tls: ssl.SSLContext | None = None
        if settings.smtp_security != "none":
            self._tls = ssl.create_default_context(
                cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            )

    async def send(self, email: Email) -> str:
        check_email(email.to)
        await self._bucket.acquire()
        s = self._settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            await aiosmtplib.send(
                compose(email),
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=password,
                use_tls=s.smtp_security == "tls",
                start_tls=s.smtp_security == "starttls",
                tls_context=self._tls,
                timeout=s.notify_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            raise _by_code(codes[-1] if codes else 550, "recipient refused") from exc
        except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPSenderRefused) as exc:
            raise ProviderUnavailable(f"smtp refused the sender or login: {exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, "smtp refused the message") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ProviderUnavailable(f"smtp unavailable: {type(exc).__name__}") from exc
        return email.message_id

    async def close(self) -> None:
        """Nothing held between sends."""


def _by_code(code: int, what: str) -> ProviderRejected | ProviderUnavailable:
    if 500 <= code < 600:
        return ProviderRejected(f"{what}: smtp {code}")
    return ProviderUnavailable(f"{what}: smtp {code}")
