"""The operator's Prometheus metrics: what opsync did, how often, how long it took, and whether it leads.

Why this module exists: opsync promises to be cheaper on the Connect API and
more observable than the official operator, and both claims need numbers an
operator can scrape: every Connect request by endpoint and status, poll cycles
and their duration, how many items were checked and how many had changed, what
was written to Secrets, workload restarts, sync errors by reason, whether this
replica is the elected one and how many items it tracks. The rest of the code
reports through the plain methods of :class:`Metrics` and never touches
``prometheus_client`` itself; :mod:`opsync.ops.server` serves :meth:`Metrics.render`.

Every :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`
(the library's global default registry is never used and this module keeps no
state of its own), so two instances in one process, as in tests, never clash
and never see each other's counts.

Label values are bounded by design, so no label ever carries a secret value
or a per-object id (no vault, item, namespace or Secret name):

* ``method``: the HTTP method; ``endpoint``: the Connect path *template*
  (``/v1/vaults/{vault}/items/{item}``), never a concrete path;
  ``status``: the HTTP status code as a string, or ``error`` when no response
  came (network failure, timeout);
* ``result``: ``ok`` or ``error``; ``action``: ``created``, ``updated`` or
  ``restored`` (anything else raises ``ValueError``);
* ``kind``: a workload kind (``Deployment``, ``StatefulSet``, ``DaemonSet``);
* ``reason``: a status-condition reason (``ItemNotFound``, ``ConnectUnavailable``, …).
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "SECRET_ACTIONS", "Metrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`Metrics.render`'s body (Prometheus text format)."""

SECRET_ACTIONS: Final = ("created", "updated", "restored")
"""The ``action`` values of ``opsync_secrets_written_total``."""

POLL_RESULTS: Final = ("ok", "error")

_REQUEST_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_POLL_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The operator's metrics, in a registry of their own.

    ``process_metrics`` adds the standard ``process_*`` series (CPU, memory,
    open files; Linux only, empty elsewhere) to this registry.
    """

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._connect_requests = Counter(
            "opsync_connect_requests",
            "HTTP requests to 1Password Connect, one per attempt (retries included), "
            "by method, endpoint (path template) and status (HTTP code, or 'error' without a response).",
            ["method", "endpoint", "status"],
            registry=registry,
        )
        self._connect_duration = Histogram(
            "opsync_connect_request_duration_seconds",
            "Duration of one HTTP request to 1Password Connect, by method and endpoint (path template).",
            ["method", "endpoint"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self._polls = Counter(
            "opsync_polls",
            "Poll cycles checking items against 1Password Connect, by result (ok, error).",
            ["result"],
            registry=registry,
        )
        self._poll_duration = Histogram(
            "opsync_poll_duration_seconds",
            "Duration of one poll cycle.",
            buckets=_POLL_BUCKETS,
            registry=registry,
        )
        self._items_checked = Counter(
            "opsync_items_checked",
            "Items whose version was checked against 1Password Connect.",
            registry=registry,
        )
        self._items_changed = Counter(
            "opsync_items_changed",
            "Items found changed in 1Password Connect (a new version to sync).",
            registry=registry,
        )
        self._secrets_written = Counter(
            "opsync_secrets_written",
            "Secrets written, by action (created, updated, restored after drift).",
            ["action"],
            registry=registry,
        )
        self._restarts = Counter(
            "opsync_restarts",
            "Workload rollouts triggered because a Secret changed, by kind (Deployment, StatefulSet, ...).",
            ["kind"],
            registry=registry,
        )
        self._contested = Counter(
            "opsync_drift_contested",
            "Times a managed Secret was found contested: another writer kept changing it back, so "
            "opsync stopped repairing it for a while (see the Contested condition and RivalWriter Events).",
            registry=registry,
        )
        self._sync_errors = Counter(
            "opsync_sync_errors",
            "Failed syncs, by reason (the Ready condition's reason, e.g. ItemNotFound, ConnectUnavailable).",
            ["reason"],
            registry=registry,
        )
        self._leader = Gauge(
            "opsync_leader",
            "1 when this replica is the elected one that syncs, else 0.",
            registry=registry,
        )
        self._tracked = Gauge(
            "opsync_tracked_items",
            "Items (OnePasswordItems and annotated workloads) this replica keeps in sync.",
            registry=registry,
        )
        self._connection_requests = Counter(
            "opsync_connection_requests",
            "HTTP requests to 1Password Connect by connection ('default' for OP_CONNECT_*, else "
            "'<namespace>/<name>' or 'cluster:<name>') and status (as opsync_connect_requests).",
            ["connection", "status"],
            registry=registry,
        )
        self._connection_polls = Counter(
            "opsync_connection_polls",
            "Poll cycles by connection and result (ok, error).",
            ["connection", "result"],
            registry=registry,
        )
        self._connection_ready = Gauge(
            "opsync_connection_ready",
            "1 while a connection's last poll succeeded, 0 while it fails; one series per connection in use.",
            ["connection"],
            registry=registry,
        )
        self._connection_tracked = Gauge(
            "opsync_connection_tracked_items",
            "Items kept in sync through each connection in use.",
            ["connection"],
            registry=registry,
        )
        # Known label values start at 0, so rate() and alerts work before the first event.
        for result in POLL_RESULTS:
            self._polls.labels(result=result)
        for action in SECRET_ACTIONS:
            self._secrets_written.labels(action=action)
        if process_metrics:
            ProcessCollector(registry=registry)

    def __repr__(self) -> str:
        return f"<Metrics registry={id(self.registry):#x}>"

    # -- Connect ----------------------------------------------------------------------------------

    def connect_request(self, method: str, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP attempt to Connect; fits ``ConnectClient(observer=...)`` as it is.

        ``endpoint`` must be the path template, ``status`` the code as a string or ``"error"``.
        """
        self._connect_requests.labels(method=method, endpoint=endpoint, status=status).inc()
        self._connect_duration.labels(method=method, endpoint=endpoint).observe(max(seconds, 0.0))

    def connection_request(self, connection: str, status: str) -> None:
        """One HTTP attempt through ``connection`` (its label)."""
        self._connection_requests.labels(connection=connection, status=status).inc()

    def connection_poll(self, connection: str, ok: bool, tracked: int) -> None:
        """A poll of ``connection`` ended; ``tracked`` items use it."""
        self._connection_polls.labels(connection=connection, result="ok" if ok else "error").inc()
        self._connection_ready.labels(connection=connection).set(1 if ok else 0)
        self._connection_tracked.labels(connection=connection).set(tracked)

    def forget_connection(self, connection: str) -> None:
        """``connection`` is no longer in use: its series go (the label set stays bounded by the
        connections in use)."""
        for family in (self._connection_requests, self._connection_polls):
            for labels in [key for key in _label_sets(family) if key[0] == connection]:
                family.remove(*labels)
        for gauge in (self._connection_ready, self._connection_tracked):
            with contextlib.suppress(KeyError):
                gauge.remove(connection)

    # -- polling ----------------------------------------------------------------------------------

    def poll(self, duration: float, ok: bool) -> None:
        """One poll cycle finished after ``duration`` seconds, successfully or not."""
        self._polls.labels(result="ok" if ok else "error").inc()
        self._poll_duration.observe(max(duration, 0.0))

    def items_checked(self, n: int = 1) -> None:
        """``n`` items were checked against Connect."""
        if n:
            self._items_checked.inc(n)

    def items_changed(self, n: int = 1) -> None:
        """``n`` items had a new version."""
        if n:
            self._items_changed.inc(n)

    # -- effects ----------------------------------------------------------------------------------

    def secret_written(self, action: str) -> None:
        """A Secret was written: ``created``, ``updated`` or ``restored`` (after a hand edit)."""
        if action not in SECRET_ACTIONS:
            raise ValueError(f"unknown Secret write action {action!r}; expected one of {SECRET_ACTIONS}")
        self._secrets_written.labels(action=action).inc()

    def drift_contested(self) -> None:
        """Another writer kept changing a managed Secret back: its repairs are held back."""
        self._contested.inc()

    def restart(self, kind: str) -> None:
        """A workload of ``kind`` (``Deployment``, ``StatefulSet``, …) was restarted."""
        self._restarts.labels(kind=kind).inc()

    def sync_error(self, reason: str) -> None:
        """A sync failed with ``reason`` (a condition reason, never a message or a name)."""
        self._sync_errors.labels(reason=reason).inc()

    # -- state ------------------------------------------------------------------------------------

    def set_leader(self, leader: bool) -> None:
        """Whether this replica is the elected one."""
        self._leader.set(1 if leader else 0)

    def set_tracked(self, n: int) -> None:
        """How many items this replica keeps in sync now."""
        self._tracked.set(n)

    # -- exposition -------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition body of every metric of this registry, and its ``Content-Type``."""
        return generate_latest(self.registry), CONTENT_TYPE

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (``opsync_polls_total``, ``result="ok"``), ``None`` if absent."""
        return self.registry.get_sample_value(name, labels)


def _label_sets(family: Counter) -> list[tuple[str, ...]]:
    """The label values a labelled metric has series for (prometheus_client has no public listing)."""
    return [tuple(key) for key in family._metrics]
