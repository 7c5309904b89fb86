"""kopf handlers of the official operator's annotation mode: Deployments that name an item.

Why this module exists: a Deployment annotated ``operator.1password.io/item-path``
and ``operator.1password.io/item-name`` gets a Secret of that name, polled like a
OnePasswordItem. Several annotated Deployments may share one Secret; deleting one
deletes the Secret only when no other Deployment uses it (otherwise it only stops
owning it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from opsync.core import desired, workloads
from opsync.core.errors import Reason
from opsync.handlers import reporting
from opsync.handlers.runtime import runtime_of
from opsync.handlers.syncing import sync_target
from opsync.sync.reconcile import Target, deployment_owner, deployment_target

logger = logging.getLogger(__name__)


def is_annotated_deployment(body: Mapping[str, Any], **_: Any) -> bool:
    """kopf's ``when=`` filter: only Deployments in annotation mode."""
    return bool(workloads.deployment_annotations(body))


async def track_deployment(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event: keep the poller's list of annotated Deployments current."""
    runtime = runtime_of(memo)
    poller = runtime.connections
    if type == "DELETED":
        runtime.diffbase.forget(body["metadata"]["uid"])
    target = deployment_target(body) if is_annotated_deployment(body) else None
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        runtime.reconciler.owner_deleted(deployment_owner(body))
    if type == "DELETED" or target is None or body.get("metadata", {}).get("deletionTimestamp"):
        poller.forget(body["metadata"]["uid"])
    else:
        poller.track(target)


async def sync_deployment(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Create, update and resume: sync the Deployment's Secret, or say what is missing."""
    runtime = runtime_of(memo)
    target = deployment_target(body)
    if target is None:
        owner = deployment_owner(body)
        await reporting.post(
            runtime.kube,
            Target(owner, body["metadata"]["namespace"], "", None).owner_ref,
            type_="Warning",
            reason=Reason.MissingItemName,
            message=f"annotate the Deployment with {desired.ITEM_NAME} to name the Secret for {desired.ITEM_PATH}",
        )
        return
    runtime.connections.track(target)
    await sync_target(runtime, target, body=None, retry=retry)


async def delete_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Delete the Secret, unless another Deployment uses it (then only stop owning it)."""
    runtime = runtime_of(memo)
    runtime.connections.forget(body["metadata"]["uid"])
    runtime.reconciler.owner_deleted(deployment_owner(body))
    target = deployment_target(body)
    if target is None:
        return
    others = [
        d
        for d in await runtime.kube.list_deployments(target.namespace)
        if d["metadata"]["uid"] != target.owner.uid and workloads.uses_secret(d, target.secret_name)
    ]
    if not others:
        await runtime.reconciler.delete(target)
    elif await runtime.reconciler.release(target):
        logger.info(
            "kept Secret %s/%s: Deployment %s uses it",
            target.namespace,
            target.secret_name,
            others[0]["metadata"]["name"],
        )
