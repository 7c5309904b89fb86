"""kopf itself: its settings, its login, and running it with opsync's runtime.

Why this module exists: everything opsync asks of kopf as a framework — which
finalizer and annotations it keeps on objects, how many workers it runs, how it
logs in — is decided here, once, and :func:`run_kopf` is the one call that
starts kopf (with the poller beside it) for a leader's term.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from opsync.core import desired
from opsync.handlers.registry import build_registry
from opsync.handlers.runtime import Runtime, runtime_of

logger = logging.getLogger(__name__)

PROGRESS_PREFIX = "opsync.io"
WORKER_LIMIT = 50
"""kopf workers per resource at most; see :func:`configure`."""
POLLER_STOP_TIMEOUT = 10.0


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials as the kubernetes client: in-cluster, else ``$KUBECONFIG``."""
    return kopf.login_via_client(**kwargs)


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings for opsync (a startup handler: kopf reads them before it watches)."""
    config = runtime_of(memo).settings
    settings.persistence.finalizer = desired.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PROGRESS_PREFIX, key="last-handled-configuration"
    )
    # opsync posts its own Events with vetted text; kopf's log-to-Event posting stays off.
    settings.posting.enabled = False
    # Exact namespace names (no globs): kopf need not list Namespaces nor watch CRDs, so
    # opsync needs no cluster-scoped permission (the Helm chart's per-namespace Roles);
    # otherwise kopf retries those requests' 403s for about a minute before it starts.
    settings.scanning.disabled = bool(config.watch_namespaces) and not any(
        set(pattern) & set("*?[!,") for pattern in config.watch_namespaces
    )
    # kopf starts a worker per object with no limit: at start-up with thousands of items that
    # is thousands of syncs in flight at once, all waiting for the same Connect and API
    # connections and each holding its bodies: peak memory with no gain in speed.
    # A worker lingers idle_timeout seconds after its object's last event, holding its slot.
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = 0.5
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


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
