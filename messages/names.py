"""Exchange, queue and routing-key names: the addresses of the contract.

With namespace ``ns`` (the ``namespace`` setting, ``privacyops`` by default):

* ``ns.events`` (topic): upstream systems publish here, routing key = message type;
* ``ns.outbound`` (topic): privacyops publishes its events here, routing key = type;
* ``ns.internal`` (direct): privacyops' own routing: internal message types (key =
  type), a worker's retries coming back (key = worker name), the retry tiers and
  dead-letter queues (``w.retry.<ms>ms``, ``w.dlq``);
* ``ns.w``, ``ns.w.retry.<ms>ms``, ``ns.w.dlq``: a worker's queues.

Upstream needs the first name only; the rest is documented so that admins and
downstream systems can find their way (README "Queue topology").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Names:
    """Every exchange and queue name, derived from the namespace."""

    namespace: str

    @property
    def events(self) -> str:
        return f"{self.namespace}.events"

    @property
    def internal(self) -> str:
        return f"{self.namespace}.internal"

    @property
    def outbound(self) -> str:
        return f"{self.namespace}.outbound"

    @property
    def unrouted(self) -> str:
        return f"{self.namespace}.outbound.unrouted"

    def queue(self, worker: str) -> str:
        return f"{self.namespace}.{worker}"

    def retry_queue(self, worker: str, delay_ms: int) -> str:
        return f"{self.namespace}.{worker}.retry.{delay_ms}ms"

    def dlq(self, worker: str) -> str:
        return f"{self.namespace}.{worker}.dlq"

    @staticmethod
    def retry_key(worker: str, delay_ms: int) -> str:
        return f"{worker}.retry.{delay_ms}ms"

    @staticmethod
    def dlq_key(worker: str) -> str:
        return f"{worker}.dlq"
