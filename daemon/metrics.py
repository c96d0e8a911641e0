"""The process's metrics registry, and the connector request observer that feeds it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connectors.base import RequestInfo
from reconcilers.metrics import SyncMetrics

_REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sync = SyncMetrics(self.registry)
        self._requests = Counter(
            "tandem_connector_requests_total",
            "Requests a connector made, by status code (or timeout/error).",
            ["connection", "method", "code"],
            registry=self.registry,
        )
        self._request_seconds = Histogram(
            "tandem_connector_request_duration_seconds",
            "Time a connector request took.",
            ["connection", "method"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )

        self.notifications = Counter(
            "tandem_notifications_total",
            "Change notifications POSTed to the app, by outcome (delivered, failed).",
            ["binding", "result"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "tandem_outbox_depth", "Notifications waiting to be delivered to the app.", ["binding"],
            registry=self.registry,
        )  # fmt: skip

    def observe_request(self, info: RequestInfo, /) -> None:
        self._requests.labels(info.connection, info.method, info.code).inc()
        self._request_seconds.labels(info.connection, info.method).observe(info.seconds)
