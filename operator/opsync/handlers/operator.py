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
from opsync.core.connection import DEFAULT_LABEL
from opsync.core.itempath import Fetched
from opsync.handlers.connections import Connections, Link, NoDefaultConnection
from opsync.handlers.diffbase import MemoryDiffBaseStorage
from opsync.handlers.registry import build_registry
from opsync.handlers.runtime import Runtime
from opsync.handlers.syncing import report_outage, restart_workloads, sync_and_report, sync_target
from opsync.kube import KubeApi
from opsync.ops.metrics import Metrics
from opsync.settings import OperatorSettings
from opsync.sync.debounce import Debouncer
from opsync.sync.poller import Outage, Poller, PollReport
from opsync.sync.ports import ItemSource
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
    tasks = [asyncio.create_task(runtime.connections.run(poller_stop), name="opsync connections")]
    if runtime.settings.default_connection:
        tasks.append(asyncio.create_task(runtime.poller.run(poller_stop), name="opsync poller"))
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
            await asyncio.wait_for(asyncio.gather(*tasks), POLLER_STOP_TIMEOUT)
        await runtime.aclose()


def build_runtime(
    settings: OperatorSettings, connect_config: ConnectConfig | None, *, kube: KubeApi, metrics: Metrics
) -> Runtime:
    """Wire the use cases to the Connect client, the Kubernetes API and the metrics. Call it in
    the running event loop (the Connect client binds to it). ``connect_config`` is None only when
    the default connection is switched off and ``OP_CONNECT_HOST`` is not set."""
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
        await report_outage(built[0], outage, built[0].poller.entries())

    def on_poll(report: PollReport, seconds: float, ok: bool) -> None:
        metrics.poll(seconds, ok)
        metrics.items_checked(report.checked)
        metrics.items_changed(report.fetched)
        metrics.set_tracked(len(built[0].connections))

    def default_poll(report: PollReport, seconds: float, ok: bool) -> None:
        on_poll(report, seconds, ok)
        metrics.connection_poll(DEFAULT_LABEL, ok, len(built[0].poller))

    def observe_default(method: str, endpoint: str, status: str, seconds: float) -> None:
        metrics.connect_request(method, endpoint, status, seconds)
        metrics.connection_request(DEFAULT_LABEL, status)

    def make_poller(link: Link) -> Poller:
        connections = built[0].connections

        async def link_outage(outage: Outage | None) -> None:
            await connections.on_outage(link, outage)

        return Poller(
            reconciler,
            poll_sync,  # the same sync path: the target's connection routes it
            interval=link.interval,
            full_resync_every=settings.full_resync_every,
            after_poll=after_poll,
            on_poll=on_poll,
            on_outage=link_outage,
            channel=link.channel,
            before_poll=lambda: connections.refresh(link),
            via=str(link.ref),
        )

    async def reroute(target: Target, body: Mapping[str, Any] | None) -> None:
        await sync_target(built[0], target, body=body, retry=0, raise_retryable=False)

    connect: ConnectClient | None = None
    source: ItemSource
    if connect_config is not None:
        connect = ConnectClient(connect_config, observer=observe_default)
        source = connect
    else:
        source = NoDefaultConnection()
    reconciler = Reconciler(
        connect=source,
        kube=kube,
        allow_empty_values=settings.allow_empty_values,
        copy_annotations=settings.enable_annotations,
    )
    poller = Poller(
        reconciler,
        poll_sync,
        interval=settings.polling_interval,
        full_resync_every=settings.full_resync_every,
        after_poll=after_poll,
        on_poll=default_poll,
        on_outage=on_outage,
    )
    runtime = Runtime(
        settings=settings,
        connect=connect,
        kube=kube,
        metrics=metrics,
        reconciler=reconciler,
        poller=poller,
        connections=Connections(
            kube=kube,
            metrics=metrics,
            default=poller,
            default_enabled=settings.default_connection,
            base_config=connect_config,
            interval=settings.polling_interval,
            make_poller=make_poller,
            report_outage=lambda outage, entries: report_outage(built[0], outage, entries),
            sync=reroute,
            observer=metrics.connect_request,
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
