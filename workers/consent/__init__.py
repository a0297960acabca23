"""Marketing consent: per channel, applied in the right order, with its history."""

from workers.consent.handlers import ConsentWorker
from workers.consent.tables import is_contactable

__all__ = ["ConsentWorker", "is_contactable"]
