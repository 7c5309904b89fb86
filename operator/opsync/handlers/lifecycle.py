"""kopf's own settings and login for opsync: what it keeps on objects, how many workers it runs.

Why this module exists: everything opsync asks of kopf as a framework — which
finalizer and annotations it keeps on objects, how many workers it runs, how it
logs in — is decided here, once, in the handlers kopf calls at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import kopf

from opsync.core import desired
from opsync.handlers.diffbase import ProgressStorage
from opsync.handlers.runtime import runtime_of

WORKER_LIMIT = 50
"""kopf workers per resource at most; see :func:`configure`."""


IDLE_TIMEOUT = 0.1
"""Seconds a kopf worker waits for its object's next event before it ends; see :func:`configure`."""


REQUEST_CONNECTIONS = 16
"""kopf's connections to the API server for requests (finalizer and status patches), beside
one per watch stream; the same as the kubernetes client's pool (:data:`opsync.kube.CONCURRENCY`)."""

WATCHED_RESOURCES = 3
"""The resources kopf watches (see :mod:`~opsync.handlers.registry`): one stream per namespace."""


def exact(watch_namespaces: Sequence[str]) -> bool:
    """Whether every watched namespace is named exactly (no pattern kopf must expand)."""
    return not any(set(pattern) & set("*?[!,") for pattern in watch_namespaces)


def kopf_connections(watch_namespaces: Sequence[str]) -> int:
    """How many connections kopf may open to the API server; 0 is no limit.

    kopf's own session has no limit: at a cold start its 50 workers per resource each open a
    connection of their own, and every TLS connection holds a 256 KiB buffer for its lifetime.
    A watch stream holds its connection as long as it runs, so the limit leaves room for every
    stream and :data:`REQUEST_CONNECTIONS` more; with namespace patterns kopf discovers the
    namespaces (and streams) itself, so there is no limit.
    """
    if not exact(watch_namespaces):
        return 0
    return WATCHED_RESOURCES * max(1, len(watch_namespaces)) + REQUEST_CONNECTIONS


async def login(*, memo: kopf.Memo, **kwargs: Any) -> kopf.AiohttpSession | None:
    """The same credentials as the kubernetes client (in-cluster, else ``$KUBECONFIG``), on a
    session whose connections are bounded (:func:`kopf_connections`)."""
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=kopf_connections(runtime_of(memo).settings.watch_namespaces),
            ssl=info.as_ssl_context(),
        ),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings for opsync (a startup handler: kopf reads them before it watches)."""
    runtime = runtime_of(memo)
    config = runtime.settings
    settings.persistence.finalizer = desired.FINALIZER
    settings.persistence.progress_storage = ProgressStorage()
    settings.persistence.diffbase_storage = runtime.diffbase
    # opsync posts its own Events with vetted text; kopf's log-to-Event posting stays off.
    settings.posting.enabled = False
    # Exact namespace names (no globs): kopf need not list Namespaces nor watch CRDs, so
    # opsync needs no cluster-scoped permission (the Helm chart's per-namespace Roles);
    # otherwise kopf retries those requests' 403s for about a minute before it starts.
    settings.scanning.disabled = bool(config.watch_namespaces) and exact(config.watch_namespaces)
    # kopf starts a worker per object with no limit: at start-up with thousands of items that
    # is thousands of syncs in flight at once, all waiting for the same Connect and API
    # connections and each holding its bodies: peak memory with no gain in speed.
    # A worker lingers idle_timeout seconds after its object's last event, holding one of those
    # slots: at a cold start the slots, not the CPU, set the pace when it lingers long (1,000
    # items: 12.8-13.1 s at 0.5 s, 8.3-9.3 s at 0.1 s, 8.4 s at 0.05 s with more workers made).
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = IDLE_TIMEOUT
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
