"""Building opsync's runtime and running kopf with it for one leader's term.

Why this module exists: :func:`build_runtime` wires the use cases to the clients
and to the kopf layer's sync path, and :func:`run_kopf` is the one call that
starts kopf (with the registry of :mod:`~opsync.handlers.registry` and the poller
beside it) and the one place that stops the poller and closes the runtime when
kopf ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core.itempath import Fetched
from opsync.handlers.diffbase import MemoryDiffBaseStorage
from opsync.handlers.registry import build_registry
from opsync.handlers.runtime import Runtime
from opsync.handlers.syncing import report_outage, restart_workloads, sync_and_report
from opsync.kube import KubeApi
from opsync.ops.metrics import Metrics
from opsync.settings import OperatorSettings
from opsync.sync.debounce import Debouncer
from opsync.sync.poller import Outage, Poller, PollReport
from opsync.sync.reconcile import Failure, Outcome, Reconciler, Target
from opsync.sync.restarts import Restarter
from opsync.sync.rivalry import Rivalry

POLLER_STOP_TIMEOUT = 10.0


async def run_kopf(
    runtime: Runtime, *, stop_flag: asyncio.Event, ready_flag: asyncio.Event | None = None
) -> None:
    """Run kopf and the poller until ``stop_flag``; then stop the poller and close the runtime."""
    namespaces = runtime.settings.watch_namespaces
    poller_stop = asyncio.Event()
    poller = asyncio.create_task(runtime.poller.run(poller_stop), name="opsync poller")
    try:
        await kopf.operator(
            registry=build_registry(),
            memo=kopf.Memo(runtime=runtime),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,  # one replica runs kopf at a time: the Lease decides which
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        poller_stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(poller, POLLER_STOP_TIMEOUT)
        await runtime.aclose()


def build_runtime(
    settings: OperatorSettings, connect_config: ConnectConfig, *, kube: KubeApi, metrics: Metrics
) -> Runtime:
    """Wire the use cases to the Connect client, the Kubernetes API and the metrics. Call it in
    the running event loop (the Connect client binds to it)."""
    # The poller reports through the same path as the handlers; that path needs the runtime,
    # which needs the poller: the callbacks read it once it exists.
    built: list[Runtime] = []

    async def poll_sync(
        target: Target, body: Mapping[str, Any] | None, fetched: Sequence[Fetched] | None
    ) -> Outcome | Failure:
        return await sync_and_report(built[0], target, body=body, fetched=fetched, raise_retryable=False)

    async def after_poll(changes: Sequence[tuple[Target, Outcome]]) -> None:
        await restart_workloads(built[0], changes)

    async def on_outage(outage: Outage | None) -> None:
        await report_outage(built[0], outage)

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
            on_outage=on_outage,
        ),
        restarter=Restarter(
            kube, default=settings.auto_restart, on_restart=lambda done: metrics.restart(done.kind)
        ),
        drift=Debouncer(settings.drift_resync_seconds),
        diffbase=MemoryDiffBaseStorage(),
        rivalry=Rivalry(),
    )
    built.append(runtime)
    return runtime
