"""Prometheus metrics of a running process (prometheus-client).

    privacyops_messages_processed_total{worker,type}      committed, effects applied
    privacyops_messages_duplicate_total{worker,type}      skipped by the inbox
    privacyops_messages_failed_total{worker,type,error}   every failed attempt
    privacyops_messages_retried_total{worker,type,error}  sent to a retry tier
    privacyops_messages_dead_lettered_total{worker,type,error}
    privacyops_handler_seconds{worker,type}               handler latency (histogram)
    privacyops_batch_size{worker}                         deliveries per batch (histogram)
    privacyops_dead_letter_depth{worker}                  refreshed by passive declare

The hot path stays cheap (the consent worker must keep 0.8 of a bare consumer's
rate): labelled children are looked up once per (worker, type) and cached, so a
message costs a dict lookup and a lock-protected add, never a ``labels()`` call.
Label values are bounded: types come from the contract registry (``unknown``
for a body that did not decode) and errors from ``PrivacyOpsError.code``.

Each ``Metrics`` has its own registry, so several services in one process (tests)
never collide in prometheus-client's global one.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN_TYPE = "unknown"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """The metric families of one process; ``for_worker`` hands out cheap views."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.processed = Counter(
            "privacyops_messages_processed",
            "Messages applied and committed.",
            ["worker", "type"],
            registry=r,
        )
        self.duplicate = Counter(
            "privacyops_messages_duplicate",
            "Redeliveries the inbox skipped.",
            ["worker", "type"],
            registry=r,
        )
        labels = ["worker", "type", "error"]
        self.failed = Counter("privacyops_messages_failed", "Failed attempts.", labels, registry=r)
        self.retried = Counter(
            "privacyops_messages_retried", "Failures sent to a retry tier.", labels, registry=r
        )
        self.dead_lettered = Counter(
            "privacyops_messages_dead_lettered", "Messages dead-lettered.", labels, registry=r
        )
        self.handler_seconds = Histogram(
            "privacyops_handler_seconds",
            "Handler run time.",
            ["worker", "type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "privacyops_batch_size",
            "Deliveries per batch.",
            ["worker"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.worker_state = Gauge(
            "privacyops_worker_state",
            "Figures a worker reports: dsr overdue/due_soon requests, open incidents, ...",
            ["worker", "name"],
            registry=r,
        )
        self.dlq_depth = Gauge(
            "privacyops_dead_letter_depth",
            "Messages in the dead-letter queue.",
            ["worker"],
            registry=r,
        )

    def for_worker(self, worker: str) -> WorkerMetrics:
        return WorkerMetrics(self, worker)


@dataclass(frozen=True)
class _PerType:
    processed: Counter
    duplicate: Counter
    handler_seconds: Histogram


class WorkerMetrics:
    """One worker's view: every labelled child is built once, then reused."""

    def __init__(self, metrics: Metrics, worker: str) -> None:
        self._m = metrics
        self._worker = worker
        self._types: dict[str, _PerType] = {}
        self._failures: dict[tuple[str, str, bool], tuple[Counter, Counter]] = {}
        self._batch = metrics.batch_size.labels(worker)

    def _per_type(self, message_type: str) -> _PerType:
        children = self._types.get(message_type)
        if children is None:
            m, labels = self._m, (self._worker, message_type)
            children = _PerType(
                m.processed.labels(*labels),
                m.duplicate.labels(*labels),
                m.handler_seconds.labels(*labels),
            )
            self._types[message_type] = children
        return children

    def batch(self, size: int) -> None:
        self._batch.observe(size)

    def handled(self, message_type: str, seconds: float) -> None:
        self._per_type(message_type).handler_seconds.observe(seconds)

    def applied(self, message_type: str, duplicate: bool) -> None:
        children = self._per_type(message_type)
        (children.duplicate if duplicate else children.processed).inc()

    def failure(self, message_type: str | None, error: str, retried: bool) -> None:
        key = (message_type or UNKNOWN_TYPE, error, retried)
        pair = self._failures.get(key)
        if pair is None:
            labels = (self._worker, key[0], error)
            routed = self._m.retried if retried else self._m.dead_lettered
            pair = (self._m.failed.labels(*labels), routed.labels(*labels))
            self._failures[key] = pair
        pair[0].inc()
        pair[1].inc()


class NullMetrics:
    """What a Consumer counts with when nobody collects (tests, benchmarks of the bare loop)."""

    def batch(self, size: int) -> None:
        pass

    def handled(self, message_type: str, seconds: float) -> None:
        pass

    def applied(self, message_type: str, duplicate: bool) -> None:
        pass

    def failure(self, message_type: str | None, error: str, retried: bool) -> None:
        pass
