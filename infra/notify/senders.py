"""Builds the e-mail and SMS senders the settings name (file channel by default)."""

from __future__ import annotations

from config.settings import Settings
from infra.notify.channels import EmailSender, SmsSender
from infra.notify.files import FileEmailSender, FileSmsSender
from infra.notify.sms import HttpSmsSender
from infra.notify.smtp import SmtpSender


def email_sender(settings: Settings) -> EmailSender:
    if settings.notify_email_transport == "smtp":
        return SmtpSender(settings)
    return FileEmailSender(settings.notify_dir)


def sms_sender(settings: Settings) -> SmsSender:
    if settings.notify_sms_transport == "http":
        return HttpSmsSender(settings)
    return FileSmsSender(settings.notify_dir)
