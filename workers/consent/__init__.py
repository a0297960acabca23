"""Marketing consent: per channel and purpose, applied in the right order, with its history."""

from workers.consent.handlers import ConsentWorker
from workers.consent.tables import is_contactable, may_ask

__all__ = ["ConsentWorker", "is_contactable", "may_ask"]
