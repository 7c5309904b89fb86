"""kopf handler of drift: a managed Secret edited or deleted by hand is restored in seconds.

Why this module exists: opsync keeps the last desired Secret of every target,
so a Secret labelled ``opsync.io/managed`` that changes outside opsync is put
back without asking Connect. The handler only schedules the repair
(:class:`~opsync.sync.debounce.Debouncer`, ``OPSYNC_DRIFT_RESYNC_SECONDS``): a
burst of edits, or opsync's own write echoing back, costs one repair, and no
kopf worker waits.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from opsync.core import crd, desired
from opsync.core.errors import KubeError, Reason
from opsync.handlers import reporting
from opsync.handlers.runtime import Runtime, runtime_of
from opsync.handlers.syncing import roll_out, sync_and_report
from opsync.sync.reconcile import Target, describe_failure, item_target
from opsync.sync.restarts import SecretChange

logger = logging.getLogger(__name__)


async def secret_changed(
    type: str | None, name: str, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A managed Secret was modified or deleted: restore it after the debounce delay. Every
    event also tells the Reconciler which managed Secrets exist (see ``note_present``), and the
    first listing finds rollouts an earlier operator was stopped before making."""
    if namespace is None:
        return
    runtime = runtime_of(memo)
    runtime.reconciler.note_present(namespace, name, present=type != "DELETED")
    if type is None:  # listed at start-up: a rollout still owed is made now
        owed = SecretChange.pending(body)
        if owed is not None:
            logger.info("Secret %s/%s: rolling out a data change made before this start", namespace, name)
            await roll_out(runtime, [owed])
    if type not in ("MODIFIED", "DELETED"):
        return
    how = type.lower()

    async def repair() -> None:
        await restore(runtime, namespace, name, how)

    backoff = runtime.rivalry.remaining((namespace, name))
    if backoff > 0:
        # Repaired once when the backoff ends (then counted as any repair), not when the next
        # change event or a full resync comes, which may be hours away once the rival is quiet.
        logger.debug(
            "Secret %s/%s %s again: contested, repaired in %.0fs when its backoff ends",
            namespace,
            name,
            how,
            backoff,
        )
        runtime.drift.schedule(("after backoff", namespace, name), repair, delay=backoff)
        return
    if type == "MODIFIED":
        runtime.rivalry.note_writer((namespace, name), desired.last_writer(body.get("metadata") or {}))
    runtime.drift.schedule((namespace, name), repair)


async def restore(runtime: Runtime, namespace: str, name: str, how: str) -> None:
    """Put the Secret back as last synced; report the repair on its owner, and a fight when
    another writer keeps changing it back (named from its managedFields when known)."""
    reconciler = runtime.reconciler
    try:
        outcome = await reconciler.restore(namespace, name)
    except Exception as exc:
        placeholder = Target(desired.Owner("v1", "Secret", name, ""), namespace, name, None)
        logger.warning(
            "could not restore Secret %s/%s: %s", namespace, name, describe_failure(exc, placeholder).message
        )
        return
    if outcome is None or outcome.action == "unchanged":
        return
    runtime.metrics.secret_written("restored")
    logger.info("restored Secret %s/%s after it was %s outside opsync", namespace, name, how)
    owner = reconciler.owner_of(namespace, name)
    if owner is None:
        return
    ref = Target(owner, namespace, name, None).owner_ref
    await reporting.post(
        runtime.kube,
        ref,
        type_="Normal",
        reason=Reason.DriftRepaired,
        message=f"Secret {name} was {how} outside opsync; restored it ({', '.join(outcome.changed) or 'recreated'})",
    )
    backoff = runtime.rivalry.repaired((namespace, name))
    if backoff is not None:
        await _contested(runtime, ref, owner, name, runtime.rivalry.writer((namespace, name)), backoff)
    elif owner.kind == crd.KIND:
        await _resync_if_failing(runtime, namespace, owner)


async def _contested(
    runtime: Runtime,
    ref: desired.ObjectRef,
    owner: desired.Owner,
    name: str,
    writer: str | None,
    backoff: float,
) -> None:
    """Another writer keeps changing the Secret back: say so loudly, once per backoff."""
    who = f"'{writer}'" if writer else "another writer"
    message = (
        f"Secret {name} keeps being changed back by {who} (repaired {runtime.rivalry.repairs} times within "
        f"{runtime.rivalry.window:.0f}s): opsync stops repairing it for {backoff:.0f}s, doubling while it lasts. "
        "Two controllers may be syncing it (a second opsync install, or leader election off on two replicas): "
        "keep one"
    )
    runtime.metrics.drift_contested()
    logger.warning("%s/%s: %s", ref.namespace, name, message)
    await reporting.post(runtime.kube, ref, type_="Warning", reason=Reason.RivalWriter, message=message)
    if owner.kind != crd.KIND:
        return
    try:
        body = await runtime.kube.read_item(ref.namespace, owner.name)
        if body is not None and body.get("metadata", {}).get("uid") == owner.uid:
            status = reporting.contested_status(body.get("status"), message)
            await runtime.kube.patch_item_status(ref.namespace, owner.name, status)
    except KubeError as exc:
        logger.warning("could not report the contested Secret on %s/%s: %s", ref.namespace, owner.name, exc)


async def _resync_if_failing(runtime: Runtime, namespace: str, owner: desired.Owner) -> None:
    """After a drift repair, re-sync a OnePasswordItem that is not Ready (e.g. TypeChangeRefused,
    which deleting the Secret resolves), so its status does not keep reporting a fixed problem."""
    try:
        body = await runtime.kube.read_item(namespace, owner.name)
    except KubeError as exc:
        logger.warning("could not read OnePasswordItem %s/%s: %s", namespace, owner.name, exc)
        return
    if body is None or body.get("metadata", {}).get("uid") != owner.uid:
        return
    condition = reporting.ready_condition(body.get("status"))
    if condition is not None and condition.get("status") == "True":
        return
    await sync_and_report(runtime, item_target(body), body=body, raise_retryable=False)
