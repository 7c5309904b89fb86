"""The operator's runtime: what every handler needs, built once and read with its type.

Why this module exists: kopf hands each handler a ``memo``, an untyped bag. opsync
puts exactly one thing in it, a frozen :class:`Runtime`, and every handler reads
it through :func:`runtime_of`, so the objects a handler uses are typed, built in
one place (:func:`build_runtime`) and never replaced while kopf runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core.itempath import Fetched
from opsync.handlers.diffbase import MemoryDiffBaseStorage
from opsync.kube import KubeApi
from opsync.ops.metrics import Metrics
from opsync.settings import OperatorSettings
from opsync.sync.debounce import Debouncer
from opsync.sync.poller import Poller, PollReport
from opsync.sync.reconcile import Failure, Outcome, Reconciler, Target
from opsync.sync.restarts import Restarter


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """The long-lived objects of one running operator (one leader term)."""

    settings: OperatorSettings
    connect: ConnectClient
    kube: KubeApi
    metrics: Metrics
    reconciler: Reconciler
    poller: Poller
    restarter: Restarter
    drift: Debouncer
    """Pending drift repairs, one per Secret, so that a handler never sleeps."""
    diffbase: MemoryDiffBaseStorage
    """What kopf last handled of each object (kept here, not written onto the object)."""

    async def aclose(self) -> None:
        """Cancel pending drift repairs and close the Connect client."""
        await self.drift.aclose()
        await self.connect.aclose()


def runtime_of(memo: kopf.Memo) -> Runtime:
    """The runtime kopf carries for opsync (see :func:`opsync.handlers.operator.run_kopf`)."""
    runtime = memo.runtime
    if not isinstance(runtime, Runtime):
        raise TypeError("kopf's memo carries no opsync Runtime")
    return runtime


def build_runtime(
    settings: OperatorSettings, connect_config: ConnectConfig, *, kube: KubeApi, metrics: Metrics
) -> Runtime:
    """Wire the use cases to the Connect client, the Kubernetes API and the metrics. Call it in
    the running event loop (the Connect client binds to it)."""
    # The poller reports through the same path as the handlers; that path needs the runtime,
    # which needs the poller: the callbacks read it once it exists.
    from opsync.handlers.syncing import restart_workloads, sync_and_report

    built: list[Runtime] = []

    async def poll_sync(
        target: Target, body: Mapping[str, Any] | None, fetched: Sequence[Fetched] | None
    ) -> Outcome | Failure:
        return await sync_and_report(built[0], target, body=body, fetched=fetched, raise_retryable=False)

    async def after_poll(changes: Sequence[tuple[Target, Outcome]]) -> None:
        await restart_workloads(built[0], changes)

    def on_poll(report: PollReport, seconds: float, ok: bool) -> None:
        metrics.poll(seconds, ok)
        metrics.items_checked(report.checked)
        metrics.items_changed(report.fetched)
        metrics.set_tracked(len(built[0].poller))

    connect = ConnectClient(connect_config, observer=metrics.connect_request)
    reconciler = Reconciler(
        connect=connect,
        kube=kube,
        allow_empty_values=settings.allow_empty_values,
        copy_annotations=settings.enable_annotations,
    )
    runtime = Runtime(
        settings=settings,
        connect=connect,
        kube=kube,
        metrics=metrics,
        reconciler=reconciler,
        poller=Poller(
            reconciler,
            poll_sync,
            interval=settings.polling_interval,
            full_resync_every=settings.full_resync_every,
            after_poll=after_poll,
            on_poll=on_poll,
        ),
        restarter=Restarter(
            kube, default=settings.auto_restart, on_restart=lambda done: metrics.restart(done.kind)
        ),
        drift=Debouncer(settings.drift_resync_seconds),
        diffbase=MemoryDiffBaseStorage(),
    )
    built.append(runtime)
    return runtime
