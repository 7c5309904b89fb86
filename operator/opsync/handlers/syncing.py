"""The one sync path of the kopf layer: sync a target, record it, report it, restart workloads.

Why this module exists: the item and Deployment handlers, force-sync, drift
repair and the poller all end in the same steps — the
:class:`~opsync.sync.reconcile.Reconciler` syncs, the poller and the metrics
record the result, status and Events report it, and a data change rolls out the
workloads that use the Secret. Only the translation of a retryable failure into
kopf's backoff (``kopf.TemporaryError``) is kopf's; the rest is the use cases'.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from opsync.core import crd
from opsync.core.errors import KubeError, Reason, Unauthorized
from opsync.core.itempath import Fetched
from opsync.handlers import reporting
from opsync.handlers.runtime import Runtime
from opsync.sync.poller import Outage, Tracked
from opsync.sync.reconcile import Failure, Outcome, Target, describe_failure
from opsync.sync.restarts import SecretChange

logger = logging.getLogger(__name__)


async def sync_and_report(
    runtime: Runtime,
    target: Target,
    *,
    body: Mapping[str, Any] | None,
    retry: int = 0,
    fetched: Sequence[Fetched] | None = None,
    raise_retryable: bool = True,
) -> Outcome | Failure:
    """Sync one target, record the result for the poller and metrics, report it as status and
    Events. A retryable failure raises kopf.TemporaryError (for kopf's backoff) unless the
    caller is the poller (``raise_retryable=False``), which retries at its next poll."""
    reconciler = runtime.reconciler
    try:
        channel = await runtime.connections.route(target)
        outcome = await reconciler.sync(target, fetched=fetched, channel=channel)
        await _retire_previous(runtime, target, body)
    except Exception as exc:
        if isinstance(exc, Unauthorized):  # perhaps rotated since the last poll: the retry may work
            await runtime.connections.reread_token(target)
        failure = describe_failure(exc, target)
        if failure.reason is Reason.InternalError:
            logger.exception("sync of %s/%s failed unexpectedly", target.namespace, target.secret_name)
        runtime.connections.record(target, failure)
        runtime.metrics.sync_error(failure.reason)
        try:
            await reporting.report_failure(runtime.kube, target, failure, body=body, retry=retry)
        except kopf.TemporaryError:
            if raise_retryable:
                raise
        return failure
    if outcome.action == "abandoned":  # its owner was deleted meanwhile: nothing to report on
        logger.debug("sync of %s/%s abandoned: its owner was deleted", target.namespace, target.secret_name)
        return outcome
    runtime.connections.record(target, outcome)
    if outcome.action in ("created", "updated"):
        runtime.metrics.secret_written(outcome.action)
        logger.info(
            "Secret %s/%s %s from item version %s%s",
            target.namespace,
            target.secret_name,
            outcome.action,
            outcome.item_version,
            f" ({', '.join(outcome.changed)})" if outcome.changed else "",
        )
    await reporting.report_success(runtime.kube, target, outcome, body=body)
    return outcome


async def _retire_previous(runtime: Runtime, target: Target, body: Mapping[str, Any] | None) -> None:
    """After ``spec.secretName`` changed, the Secret written under the old name (in the status)
    goes: deleted, or left behind as the deletion policy says. Failing raises, so the status
    keeps the old name and the next sync tries again."""
    previous = ((body or {}).get("status") or {}).get("secretName")
    if target.owner.kind != crd.KIND or not isinstance(previous, str) or previous == target.secret_name:
        return
    if await runtime.reconciler.retire(target, previous):
        verb = "left behind (deletionPolicy Retain)" if target.retain else "deleted"
        message = f"Secret {previous} {verb}: the Secret is now {target.secret_name}"
        logger.info("%s/%s: %s", target.namespace, target.owner.name, message)
        await reporting.post(
            runtime.kube, target.owner_ref, type_="Normal", reason=Reason.SecretRenamed, message=message
        )


async def restart_workloads(runtime: Runtime, synced: Sequence[tuple[Target, Outcome]]) -> None:
    """Roll out the workloads using Secrets whose data changed (at most once per workload)."""
    changes = [change for target, outcome in synced if (change := SecretChange.of(target, outcome))]
    await roll_out(runtime, changes)


async def roll_out(runtime: Runtime, changes: Sequence[SecretChange]) -> None:
    """Restart for ``changes``, then clear each Secret's rollout marker. A rollout the operator
    dies before finishing leaves the marker, and the next start rolls out from it (a workload
    whose restart record already holds the data's fingerprint is not restarted twice)."""
    if not changes:
        return
    if runtime.settings.fault_point == "exit-before-rollout":  # tests only: a kill, here
        logger.warning("fault point exit-before-rollout: exiting before the rollouts")
        os._exit(137)
    await runtime.restarter.restart(changes)
    for change in changes:
        try:
            await runtime.kube.clear_rollout_pending(change.namespace, change.secret_name, change.fingerprint)
        except KubeError as exc:  # the marker stays: the next start rolls out again, a no-op
            logger.warning(
                "could not clear the rollout marker of Secret %s/%s: %s",
                change.namespace,
                change.secret_name,
                exc,
            )


async def sync_target(
    runtime: Runtime,
    target: Target,
    *,
    body: Mapping[str, Any] | None,
    retry: int,
    raise_retryable: bool = True,
) -> None:
    """A handler's sync: report, then restart the workloads if the data changed."""
    result = await sync_and_report(runtime, target, body=body, retry=retry, raise_retryable=raise_retryable)
    if isinstance(result, Outcome):
        await restart_workloads(runtime, [(target, result)])


OUTAGE_WRITES = 16
"""Status writes in flight at once when an outage begins or ends (the Kubernetes pool's size)."""


async def report_outage(runtime: Runtime, outage: Outage | None, entries: Sequence[Tracked]) -> None:
    """Connect (of one connection) began failing the polls (``outage``) or answers again (None):
    every synced OnePasswordItem of ``entries`` (the owners polled through it) gets ``Fresh=False``
    (its Secret is still right, so ``Ready`` stays) and one Warning Event, or loses that condition
    again."""
    if outage is not None:
        logger.warning("%s unavailable: %s", outage.via, outage.describe())
    else:
        logger.info("Connect answers again: Secrets are being kept up to date")
    gate = asyncio.Semaphore(OUTAGE_WRITES)

    async def one(entry: Tracked) -> None:
        target, body = entry.target, entry.body
        if target.owner.kind != crd.KIND or body is None or not entry.synced:
            return
        status = reporting.fresh_status(body.get("status"), outage)
        if status is None:
            return
        async with gate:
            try:
                await runtime.kube.patch_item_status(target.namespace, target.owner.name, status)
                if outage is not None:
                    await reporting.post(
                        runtime.kube,
                        target.owner_ref,
                        type_="Warning",
                        reason=outage.reason,
                        message=outage.describe(),
                    )
            except KubeError as exc:
                logger.warning(
                    "could not report Connect's state on %s/%s: %s", target.namespace, target.owner.name, exc
                )

    await asyncio.gather(*(one(entry) for entry in entries))
