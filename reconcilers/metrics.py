"""The sync metrics of the contract, on an injected registry.

Label values stay bounded: a binding or connection name, a side, an op, a result;
never a record id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconcilers.workqueue import QueueObserver

_DURATIONS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ManyHistogram(Histogram):
    """A histogram that also takes many observations in one call, as each would land.

    A batched import releases a page of a thousand keys at once, and observing each
    one (about 1.4 µs) costs about three times releasing it. The bucket and sum values
    are the library's own attributes (the version is pinned); a test holds the result to
    that of one call each."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        self._sum.inc(sum(amounts))
        # The first bound not below the amount: the bucket `observe` picks (the last is +Inf).
        for index, count in Tally(bisect_left(self._upper_bounds, amount) for amount in amounts).items():
            self._buckets[index].inc(count)


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconcile_total = Counter(
            "tandem_reconcile_total", "Reconciles by result.", ["binding", "result"], registry=registry
        )
        self.reconcile_errors = Counter(
            "tandem_reconcile_errors_total", "Reconciles that failed.", ["binding"], registry=registry
        )
        self.reconcile_duration = Histogram(
            "tandem_reconcile_duration_seconds",
            "Time spent in one reconcile.",
            ["binding"],
            buckets=_DURATIONS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "tandem_workqueue_depth", "Keys waiting in the work queue.", ["binding"], registry=registry
        )
        self.queue_adds = Counter(
            "tandem_workqueue_adds_total", "Keys added to the work queue.", ["binding"], registry=registry
        )
        self.queue_retries = Counter(
            "tandem_workqueue_retries_total", "Keys requeued after a failure.", ["binding"], registry=registry
        )
        self.queue_duration = Histogram(
            "tandem_workqueue_queue_duration_seconds",
            "Time a key waits in the queue before a worker takes it.",
            ["binding"],
            buckets=_DURATIONS,
            registry=registry,
        )
        self.work_duration = ManyHistogram(
            "tandem_workqueue_work_duration_seconds",
            "Time a worker holds a key.",
            ["binding"],
            buckets=_DURATIONS,
            registry=registry,
        )
        self.unfinished = Gauge(
            "tandem_workqueue_unfinished_work_seconds",
            "Seconds of work in progress that has not finished.",
            ["binding"],
            registry=registry,
        )
        self.longest = Gauge(
            "tandem_workqueue_longest_running_processor_seconds",
            "Seconds the longest-running reconcile has been running.",
            ["binding"],
            registry=registry,
        )
        self.active_workers = Gauge("tandem_active_workers", "Workers now reconciling.", ["binding"], registry=registry)
        self.writes = Counter(
            "tandem_writes_total", "Writes carried out.", ["binding", "side", "op"], registry=registry
        )
        self.links = Gauge("tandem_links", "Links by state.", ["binding", "state"], registry=registry)
        self.echoes = Counter(
            "tandem_echoes_suppressed_total",
            "Change notifications (often of tandem's own writes) that found both sides agreeing.",
            ["binding"],
            registry=registry,
        )
        self.conflicts = Counter(
            "tandem_conflicts_total", "Conflicts resolved by policy.", ["binding"], registry=registry
        )
        self.deletes_blocked = Counter(
            "tandem_deletes_blocked_total",
            "Resyncs whose deletions the mass-delete guard held back, and deletions it held one at a time.",
            ["binding"],
            registry=registry,
        )
        self.resync_interval = Gauge(
            "tandem_resync_interval_seconds",
            "The configured interval between full resyncs (for alerting on missed resyncs).",
            ["binding"],
            registry=registry,
        )
        self.listing_stalled = Gauge(
            "tandem_listing_stalled",
            "1 while the binding's last resync met a listing that would never end (a cycle, a"
            " repeated page, a limit); 0 otherwise.",
            ["binding"],
            registry=registry,
        )
        self.last_resync = Gauge(
            "tandem_last_resync_timestamp_seconds",
            "When the last complete resync finished (Unix time).",
            ["binding"],
            registry=registry,
        )

    def queue_observer(self, binding: str) -> QueueObserver:
        return _QueueMetrics(self, binding)


class _QueueMetrics:
    def __init__(self, metrics: SyncMetrics, binding: str) -> None:
        self._adds = metrics.queue_adds.labels(binding)
        self._retries = metrics.queue_retries.labels(binding)
        self._depth = metrics.queue_depth.labels(binding)
        self._waited = metrics.queue_duration.labels(binding)
        self._worked = metrics.work_duration.labels(binding)

    def added(self) -> None:
        self._adds.inc()

    def retried(self) -> None:
        self._retries.inc()

    def depth(self, depth: int) -> None:
        self._depth.set(depth)

    def waited(self, seconds: float) -> None:
        self._waited.observe(seconds)

    def worked(self, seconds: float) -> None:
        self._worked.observe(seconds)

    def worked_many(self, seconds: Sequence[float]) -> None:
        self._worked.observe_many(seconds)
