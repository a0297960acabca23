"""Notices to subjects, sent exactly once by e-mail or SMS, in the tenant's name."""

from workers.notifier.handlers import NotifierWorker

__all__ = ["NotifierWorker"]
