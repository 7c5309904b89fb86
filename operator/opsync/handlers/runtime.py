"""The operator's runtime: what every handler needs, built once and read with its type.

Why this module exists: kopf hands each handler a ``memo``, an untyped bag. opsync
puts exactly one thing in it, a frozen :class:`Runtime`, and every handler reads
it through :func:`runtime_of`, so the objects a handler uses are typed, built in
one place (:func:`opsync.handlers.operator.build_runtime`) and never replaced while kopf runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import kopf

from opsync.connect.client import ConnectClient
from opsync.handlers.connections import Connections
from opsync.handlers.diffbase import MemoryDiffBaseStorage
from opsync.kube import KubeApi
from opsync.ops.metrics import Metrics
from opsync.settings import OperatorSettings
from opsync.sync.debounce import Debouncer
from opsync.sync.poller import Poller
from opsync.sync.reconcile import Reconciler
from opsync.sync.restarts import Restarter
from opsync.sync.rivalry import Rivalry


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """The long-lived objects of one running operator (one leader term)."""

    settings: OperatorSettings
    connect: ConnectClient | None
    """The operator's own client (``OP_CONNECT_*``); None when the default connection is off and
    no host is set."""
    kube: KubeApi
    metrics: Metrics
    reconciler: Reconciler
    poller: Poller
    """The poller of the operator's own connection."""
    connections: Connections
    """Every owner's connection: the handlers track, forget and record owners here, and each
    sync asks it for the owner's channel (the operator's own, or a OnePasswordConnection's)."""
    restarter: Restarter
    drift: Debouncer
    """Pending drift repairs, one per Secret, so that a handler never sleeps."""
    diffbase: MemoryDiffBaseStorage
    """What kopf last handled of each object (kept here, not written onto the object)."""
    rivalry: Rivalry
    """Which managed Secrets another writer keeps changing back (their repairs held back)."""

    async def aclose(self) -> None:
        """Cancel pending drift repairs, stop the template thread and close the Connect client."""
        await self.drift.aclose()
        self.reconciler.close()
        if self.connect is not None:
            await self.connect.aclose()


def runtime_of(memo: kopf.Memo) -> Runtime:
    """The runtime kopf carries for opsync (see :func:`opsync.handlers.operator.run_kopf`)."""
    runtime = memo.runtime
    if not isinstance(runtime, Runtime):
        raise TypeError("kopf's memo carries no opsync Runtime")
    return runtime
