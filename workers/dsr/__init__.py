"""Data-subject requests: access, rectification, erasure, restriction, objection, portability."""

from workers.dsr.worker import DsrWorker

__all__ = ["DsrWorker"]
