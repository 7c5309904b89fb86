"""kopf handlers of OnePasswordItems: sync on create, update, resume and force-sync; delete.

Why this module exists: it is the adapter between kopf's view of a
OnePasswordItem (a body, a retry count) and the use cases: each handler turns
the body into a :class:`~opsync.sync.reconcile.Target`, keeps the poller's list
current, and hands the rest to :mod:`opsync.handlers.syncing`. Deleting an item
deletes its Secret (kopf holds the official finalizer
``onepassword.com/finalizer.secret`` until then), or leaves it behind with
``deletionPolicy: Retain``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from opsync.core.errors import KubeError
from opsync.handlers.runtime import Runtime, runtime_of
from opsync.handlers.syncing import sync_target
from opsync.sync.reconcile import Target, item_target

logger = logging.getLogger(__name__)

FORCE_SYNC = "opsync.io/force-sync"
"""Set this annotation of a OnePasswordItem to any new value to sync it at once."""


def reported(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the poller keeps of a OnePasswordItem to report its later syncs on: the names, the
    generation and the status. Not the whole body: that would keep every item's decoded JSON,
    managed fields and all, alive for as long as the operator runs."""
    meta = body.get("metadata") or {}
    kept = {key: meta[key] for key in ("name", "namespace", "uid", "generation") if key in meta}
    return {"metadata": kept, "status": dict(body.get("status") or {})}


async def track_item(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event: keep the poller's targets (and the bodies it reports status on)
    current, and sync at once when the force-sync annotation takes a new value (kopf's update
    handlers do not see annotation changes: annotations are not part of what kopf compares)."""
    runtime = runtime_of(memo)
    poller = runtime.connections
    uid = body["metadata"]["uid"]
    if type == "DELETED":
        runtime.diffbase.forget(uid)
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        poller.forget(uid)
        target = item_target(body)
        runtime.reconciler.owner_deleted(target.owner)  # no sync in flight may write after this
        if type == "DELETED":
            # Gone, perhaps before kopf's finalizer was on it (deleted while its first sync ran):
            # then no delete handler ran, and its Secret would be left behind. One read if not.
            try:
                await _let_go(runtime, target)
            except KubeError as exc:  # an event handler is not retried: say what is left
                logger.warning(
                    "could not clean up after deleted OnePasswordItem %s/%s: %s",
                    target.namespace,
                    target.owner.name,
                    exc,
                )
        return
    known = poller.tracked(uid)
    previous = known.target.annotations.get(FORCE_SYNC) if known is not None else None
    target = item_target(body)
    poller.track(target, reported(body))
    token = target.annotations.get(FORCE_SYNC)
    if known is not None and token is not None and token != previous:
        logger.info("force-sync of OnePasswordItem %s/%s requested", target.namespace, target.owner.name)
        await sync_target(runtime, target, body=body, retry=0, raise_retryable=False)


async def sync_item(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Create, update and resume: sync the Secret."""
    runtime = runtime_of(memo)
    target = item_target(body)
    runtime.connections.track(target, reported(body))
    await sync_target(runtime, target, body=body, retry=retry)


async def delete_item(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Delete the Secret with its item, or leave it behind (``deletionPolicy: Retain``)."""
    runtime = runtime_of(memo)
    target = item_target(body)
    runtime.connections.forget(target.owner.uid)
    runtime.reconciler.owner_deleted(target.owner)
    await _let_go(runtime, target)


async def _let_go(runtime: Runtime, target: Target) -> None:
    reconciler = runtime.reconciler
    if target.retain:
        if await reconciler.retain(target):
            logger.info("kept Secret %s/%s (deletionPolicy Retain)", target.namespace, target.secret_name)
    elif await reconciler.delete(target):
        logger.info("deleted Secret %s/%s with its OnePasswordItem", target.namespace, target.secret_name)
