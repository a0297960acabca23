"""Data-subject requests: access, rectification, erasure, restriction, objection, portability."""

from workers.dsr.handlers import DsrWorker

__all__ = ["DsrWorker"]
