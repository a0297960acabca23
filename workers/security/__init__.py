"""Security alerts: correlated into incidents; compromises notified to tenant, regulator record
and subjects (POPIA s21, s22; GDPR art 33, 34)."""

from workers.security.handlers import SecurityWorker

__all__ = ["SecurityWorker"]
