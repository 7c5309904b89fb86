"""Running kopf with opsync's runtime for one leader's term.

Why this module exists: :func:`run_kopf` is the one call that starts kopf (with
the registry of :mod:`~opsync.handlers.registry` and the poller beside it) and
the one place that stops the poller and closes the runtime when kopf ends.
"""

from __future__ import annotations

import asyncio
import contextlib

import kopf

from opsync.handlers.registry import build_registry
from opsync.handlers.runtime import Runtime

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
