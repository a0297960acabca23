"""What the transports share: the rendered message, the sender protocols, a rate limit.

A sender takes one rendered notice and either returns the provider's reference
or raises ``ProviderUnavailable`` (retryable: down, timing out, throttling) or
``ProviderRejected`` (permanent: refused address or content). Every sender uses
the notice_id as the provider's idempotency key where the provider has one
(SMTP ``Message-ID``, the SMS gateway's ``Idempotency-Key``, the file name).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Protocol

from messages.errors import ProviderRejected

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+[1-9]\d{7,14}$")


@dataclass(frozen=True)
class Email:
    notice_id: str
    sender_name: str
    sender: str
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Sms:
    notice_id: str
    sender_id: str
    to: str
    text: str


@dataclass(frozen=True)
class Letter:
    """A notice on paper: the address block and the full text (POPIA s22(4): by post)."""

    notice_id: str
    sender_name: str
    sender_address: str
    to: str
    subject: str
    text: str


class EmailSender(Protocol):
    transport: str

    async def send(self, email: Email) -> str: ...

    async def close(self) -> None: ...


class SmsSender(Protocol):
    transport: str

    async def send(self, sms: Sms) -> str: ...

    async def close(self) -> None: ...


class LetterSender(Protocol):
    transport: str

    async def send(self, letter: Letter) -> str: ...

    async def close(self) -> None: ...


def check_postal(address: str) -> str:
    """A postal address worth printing: at least a line and a place, no control characters."""
    if len(address.strip()) < 8 or any(ord(c) < 32 and c != "\n" for c in address):
        raise ProviderRejected("invalid postal address")
    return address


def message_id(notice_id: str, domain: str) -> str:
    """The RFC 5322 Message-ID of a notice: the same for every attempt."""
    return f"<{notice_id}@{domain}>"


def check_email(address: str) -> str:
    if not _EMAIL.match(address):
        raise ProviderRejected("invalid e-mail address")
    return address


def normalise_phone(number: str) -> str:
    """E.164; a South African local number (0XX...) gets +27."""
    digits = re.sub(r"[\s\-().]", "", number)
    if re.fullmatch(r"0\d{9}", digits):
        digits = "+27" + digits[1:]
    if not _PHONE.match(digits):
        raise ProviderRejected("invalid phone number")
    return digits


def compose(email: Email, when: str | None = None) -> EmailMessage:
    """A multipart/alternative message: plain text first, then HTML."""
    message = EmailMessage()
    message["From"] = formataddr((email.sender_name, email.sender))
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Message-ID"] = email.message_id
    message["Date"] = when or format_datetime(datetime.now(UTC))
    for name, value in email.headers:
        message[name] = value
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


class TokenBucket:
    """At most ``rate`` sends per second on average, bursts up to ``burst``.

    ``acquire`` waits at most ``1 / rate`` seconds per caller in line, so the
    wait is bounded by the rate and the number of waiting senders.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._stamp: float | None = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self._stamp is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                await asyncio.sleep(wait)
                self._stamp = loop.time()
                self._tokens = 1.0
            self._tokens -= 1
