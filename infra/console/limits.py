"""Failed attempts per key in a sliding window: login names and download codes.

Kept in the process's memory: one console process serves the console, and a
restart forgetting a few failures is an acceptable cost for not writing every
wrong guess to the store. The clock is the event loop's (monotonic).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most ``attempts`` failures per key within ``window_s``; then the key is blocked
    until the oldest failure leaves the window."""

    def __init__(
        self, attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._attempts = attempts
        self._window = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] >= self._window:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self._attempts

    def failed(self, key: str) -> None:
        self._recent(key)
        self._failures.setdefault(key, deque()).append(self._clock())

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)
