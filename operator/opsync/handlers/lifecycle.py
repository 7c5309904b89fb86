"""kopf's own settings and login for opsync: what it keeps on objects, how many workers it runs.

Why this module exists: everything opsync asks of kopf as a framework — which
finalizer and annotations it keeps on objects, how many workers it runs, how it
logs in — is decided here, once, in the handlers kopf calls at start-up.
"""

from __future__ import annotations

from typing import Any

import kopf

from opsync.core import desired
from opsync.handlers.diffbase import ProgressStorage
from opsync.handlers.runtime import runtime_of

WORKER_LIMIT = 50
"""kopf workers per resource at most; see :func:`configure`."""


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials as the kubernetes client: in-cluster, else ``$KUBECONFIG``."""
    return kopf.login_via_client(**kwargs)


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
