"""Transports for notices: e-mail (SMTP, files), SMS (HTTP gateway, files), post (files).

A transport takes one rendered message and returns the provider's reference,
or raises ``ProviderUnavailable`` (retryable) or ``ProviderRejected``
(permanent). What a notice says and to whom it goes is the notifier worker's
business (``workers/notifier``); this package only carries it.
"""

from __future__ import annotations

from config.settings import Settings
from infra.transports.base import EmailSender, LetterSender, SmsSender
from infra.transports.files import FileEmailSender, FileLetterSender, FileSmsSender
from infra.transports.sms_gateway import HttpSmsSender
from infra.transports.smtp import SmtpSender


def email_sender(settings: Settings) -> EmailSender:
    """The e-mail transport the settings name (the file channel by default)."""
    if settings.notify_email_transport == "smtp":
        return SmtpSender(settings)
    return FileEmailSender(settings.notify_dir)


def sms_sender(settings: Settings) -> SmsSender:
    """The SMS transport the settings name (the file channel by default)."""
    if settings.notify_sms_transport == "http":
        return HttpSmsSender(settings)
    return FileSmsSender(settings.notify_dir)


def letter_sender(settings: Settings) -> LetterSender:
    """Letters: written for the print run under ``notify_dir/post`` (the only post transport)."""
    return FileLetterSender(settings.notify_dir)
