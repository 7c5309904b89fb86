"""Prometheus metrics of one local Connect server, served at ``/metrics``.

Why this module exists: benchmarks and tests count requests per endpoint and
status (``opsync_connect_server_requests_total``), time them
(``opsync_connect_server_request_duration_seconds``) and count injected faults
(``opsync_connect_server_faults_injected_total``). Every server has its own
:class:`CollectorRegistry`, so several servers in one process (tests) never
share counters. Endpoints are labelled by route template
(``/v1/vaults/{vaultUuid}/items/{itemUuid}``), never by raw path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
REQUESTS = "opsync_connect_server_requests"
UNMATCHED = "unmatched"
"""The endpoint label of requests that match no route."""


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            REQUESTS,
            "HTTP requests served, by method, endpoint (route template) and status ('dropped' for dropped).",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "opsync_connect_server_request_duration_seconds",
            "Time to serve a request, by method and endpoint (route template).",
            ["method", "endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self._faults = Counter(
            "opsync_connect_server_faults_injected",
            "Faults injected on purpose, by kind (latency, error, rate_limit, drop, transient_403).",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, method: str, endpoint: str, status: str, seconds: float) -> None:
        self._requests.labels(method=method, endpoint=endpoint, status=status).inc()
        self._duration.labels(method=method, endpoint=endpoint).observe(seconds)

    def fault(self, kind: str) -> None:
        self._faults.labels(kind=kind).inc()

    def request_count(
        self, endpoint: str | None = None, status: int | str | None = None, method: str | None = None
    ) -> int:
        """Requests counted so far, summed over every label not given."""
        total = 0.0
        for family in self._requests.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                if endpoint is not None and labels["endpoint"] != endpoint:
                    continue
                if status is not None and labels["status"] != str(status):
                    continue
                if method is not None and labels["method"] != method.upper():
                    continue
                total += sample.value
        return int(total)

    def fault_count(self, kind: str | None = None) -> int:
        total = 0.0
        for family in self._faults.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and (kind is None or sample.labels["kind"] == kind):
                    total += sample.value
        return int(total)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
