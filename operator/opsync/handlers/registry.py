"""Every kopf handler of opsync, registered on a fresh registry built from the settings.

* OnePasswordItem: create/update/resume sync the Secret (an update includes a
  new ``opsync.io/force-sync`` annotation value: it syncs at once); delete
  removes it (kopf adds our finalizer, ``onepassword.com/finalizer.secret``).
* One :class:`~opsync.sync.poller.Poller` per operator checks Connect every
  ``POLLING_INTERVAL`` for items that changed, and syncs only those; the
  handlers keep its list of targets current from the watch events.
* Secrets labelled ``opsync.io/managed``: any edit or deletion is repaired from
  the last synced state within seconds, without asking Connect.
* Deployments annotated ``operator.1password.io/item-path`` + ``item-name``:
  the official operator's annotation mode (polled like items). Deleting one
  deletes its Secret unless another Deployment uses it (then it only stops
  owning it); several annotated Deployments may share one Secret.
* When a sync changes a Secret's data, the workloads that use it and opted in
  are restarted (:mod:`opsync.sync.restarts`), once per workload per change.

kopf itself runs only in the replica that holds the leader Lease (see
:func:`run_operator`), so exactly one replica writes and polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core import crd, desired, workloads
from opsync.core.errors import KubeError
from opsync.core.itempath import Fetched
from opsync.core.mapping import sanitize_secret_name
from opsync.handlers import reporting
from opsync.kube import KubeApi, load_api_client
from opsync.ops.metrics import Metrics
from opsync.ops.server import OpsServer
from opsync.settings import OperatorSettings
from opsync.sync.leader import LeaderElector, default_identity, default_lease_namespace
from opsync.sync.poller import Poller, PollReport
from opsync.sync.reconcile import Failure, Outcome, Reconciler, Target, describe_failure, item_target
from opsync.sync.restarts import Restarter, SecretChange

logger = logging.getLogger(__name__)

PROGRESS_PREFIX = "opsync.io"
WORKER_LIMIT = 50
FORCE_SYNC = "opsync.io/force-sync"
"""Set this annotation of a OnePasswordItem to any new value to sync it at once."""
_CR = (crd.GROUP, crd.VERSION, crd.PLURAL)
_DEPLOYMENTS = ("apps", "v1", "deployments")


# -- targets -------------------------------------------------------------------------------------


def is_annotated_deployment(body: Mapping[str, Any], **_: Any) -> bool:
    return bool(workloads.deployment_annotations(body))


def deployment_target(body: Mapping[str, Any]) -> Target | None:
    meta = body.get("metadata", {})
    annotations = workloads.deployment_annotations(body)
    name = annotations.get(desired.ITEM_NAME)
    if not name:
        return None
    return Target(
        owner=desired.Owner("apps/v1", "Deployment", meta["name"], meta["uid"]),
        namespace=meta["namespace"],
        secret_name=sanitize_secret_name(name),
        item_path=annotations.get(desired.ITEM_PATH),
        annotations={k: v for k, v in annotations.items() if k == desired.AUTO_RESTART},
    )


# -- the shared sync path ------------------------------------------------------------------------


async def sync_and_report(
    memo: kopf.Memo,
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
    reconciler: Reconciler = memo.reconciler
    poller: Poller = memo.poller
    metrics: Metrics = memo.metrics
    try:
        outcome = await reconciler.sync(target, fetched=fetched)
        await _retire_previous(reconciler, target, body)
    except Exception as exc:
        failure = describe_failure(exc, target)
        if failure.reason == "InternalError":
            logger.exception("sync of %s/%s failed unexpectedly", target.namespace, target.secret_name)
        poller.record(target, failure)
        metrics.sync_error(failure.reason)
        try:
            await reporting.report_failure(reconciler.kube, target, failure, body=body, retry=retry)
        except kopf.TemporaryError:
            if raise_retryable:
                raise
        return failure
    poller.record(target, outcome)
    if outcome.action in ("created", "updated"):
        metrics.secret_written(outcome.action)
    await reporting.report_success(reconciler.kube, target, outcome, body=body)
    return outcome


async def _retire_previous(reconciler: Reconciler, target: Target, body: Mapping[str, Any] | None) -> None:
    """After ``spec.secretName`` changed, the Secret written under the old name (in the status)
    goes: deleted, or left behind as the deletion policy says. Failing raises, so the status
    keeps the old name and the next sync tries again."""
    previous = ((body or {}).get("status") or {}).get("secretName")
    if target.owner.kind != crd.KIND or not isinstance(previous, str) or previous == target.secret_name:
        return
    if await reconciler.retire(target, previous):
        verb = "left behind (deletionPolicy Retain)" if target.retain else "deleted"
        message = f"Secret {previous} {verb}: the Secret is now {target.secret_name}"
        logger.info("%s/%s: %s", target.namespace, target.owner.name, message)
        await reporting.post(
            reconciler.kube, target.owner_ref, type_="Normal", reason="SecretRenamed", message=message
        )


async def restart_workloads(memo: kopf.Memo, synced: Sequence[tuple[Target, Outcome]]) -> None:
    """Roll out the workloads using Secrets whose data changed (at most once per workload)."""
    changes = [change for target, outcome in synced if (change := SecretChange.of(target, outcome))]
    if changes:
        restarter: Restarter = memo.restarter
        await restarter.restart(changes)


async def sync_target(
    memo: kopf.Memo,
    target: Target,
    *,
    body: Mapping[str, Any] | None,
    retry: int,
    raise_retryable: bool = True,
) -> None:
    """A handler's sync: report, then restart the workloads if the data changed."""
    result = await sync_and_report(memo, target, body=body, retry=retry, raise_retryable=raise_retryable)
    if isinstance(result, Outcome):
        await restart_workloads(memo, [(target, result)])


# -- registry ------------------------------------------------------------------------------------


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as the kubernetes client: in-cluster, else $KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
        settings.batching.worker_limit = WORKER_LIMIT
        settings.batching.idle_timeout = 0.5
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        metrics: Metrics = memo.metrics
        connect = ConnectClient(memo.connect_config, observer=metrics.connect_request)
        kube: KubeApi = memo.kube
        memo.reconciler = Reconciler(
            connect=connect,
            kube=kube,
            allow_empty_values=config.allow_empty_values,
            copy_annotations=config.enable_annotations,
        )
        memo.restarter = Restarter(
            kube, default=config.auto_restart, on_restart=lambda done: metrics.restart(done.kind)
        )

        async def after_poll(changes: Sequence[tuple[Target, Outcome]]) -> None:
            await restart_workloads(memo, changes)

        async def poll_sync(
            target: Target, body: Mapping[str, Any] | None, fetched: Sequence[Fetched] | None
        ) -> Outcome | Failure:
            return await sync_and_report(memo, target, body=body, fetched=fetched, raise_retryable=False)

        def on_poll(report: PollReport, seconds: float, ok: bool) -> None:
            metrics.poll(seconds, ok)
            metrics.items_checked(report.checked)
            metrics.items_changed(report.fetched)
            metrics.set_tracked(len(memo.poller))
            logger.debug(
                "poll%s: %d vault(s) moved, %d listed, %d item(s) checked, %d read, %d synced",
                " (full resync)" if report.full else "",
                report.vaults_changed,
                report.vaults_listed,
                report.checked,
                report.fetched,
                len(report.synced),
            )

        memo.poller = Poller(
            memo.reconciler,
            poll_sync,
            interval=config.polling_interval,
            full_resync_every=config.full_resync_every,
            after_poll=after_poll,
            on_poll=on_poll,
        )
        memo.poller_stop = asyncio.Event()
        memo.poller_task = asyncio.create_task(memo.poller.run(memo.poller_stop), name="opsync poller")

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = getattr(memo, "poller_task", None)
        if task is not None:
            memo.poller_stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        reconciler: Reconciler | None = getattr(memo, "reconciler", None)
        if reconciler is not None:
            await reconciler.connect.aclose()

    # -- OnePasswordItem -------------------------------------------------------------------------

    @kopf.on.event(*_CR, registry=registry)
    async def track_item(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # Keeps the poller's targets (and the bodies it reports status on) current, and syncs
        # at once when the force-sync annotation takes a new value (kopf's update handlers do
        # not see annotation changes: annotations are not part of what kopf compares).
        uid = body["metadata"]["uid"]
        if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
            memo.poller.forget(uid)
            return
        poller: Poller = memo.poller
        known = poller.tracked(uid)
        previous = known.target.annotations.get(FORCE_SYNC) if known is not None else None
        target = item_target(body)
        poller.track(target, dict(body))
        token = target.annotations.get(FORCE_SYNC)
        if known is not None and token is not None and token != previous:
            logger.info("force-sync of OnePasswordItem %s/%s requested", target.namespace, target.owner.name)
            await sync_target(memo, target, body=body, retry=0, raise_retryable=False)

    @kopf.on.resume(*_CR, registry=registry)
    @kopf.on.create(*_CR, registry=registry)
    @kopf.on.update(*_CR, registry=registry)
    async def sync_item(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        target = item_target(body)
        memo.poller.track(target, dict(body))
        await sync_target(memo, target, body=body, retry=retry)

    @kopf.on.delete(*_CR, registry=registry)
    async def delete_item(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        target = item_target(body)
        memo.poller.forget(target.owner.uid)
        reconciler: Reconciler = memo.reconciler
        if target.retain:
            if await reconciler.retain(target):
                logger.info("kept Secret %s/%s (deletionPolicy Retain)", target.namespace, target.secret_name)
        elif await reconciler.delete(target):
            logger.info("deleted Secret %s/%s with its OnePasswordItem", target.namespace, target.secret_name)

    # -- drift repair ----------------------------------------------------------------------------

    @kopf.on.event("v1", "secrets", labels={desired.MANAGED_LABEL: "true"}, registry=registry)
    async def secret_changed(type: str, name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
        if type not in ("MODIFIED", "DELETED") or namespace is None:
            return
        reconciler: Reconciler = memo.reconciler
        await asyncio.sleep(config.drift_resync_seconds)
        try:
            outcome = await reconciler.restore(namespace, name)
        except Exception as exc:
            logger.warning(
                "could not restore Secret %s/%s: %s",
                namespace,
                name,
                describe_failure(exc, _placeholder(namespace, name)).message,
            )
            return
        if outcome is not None and outcome.action != "unchanged":
            memo.metrics.secret_written("restored")
            logger.info("restored Secret %s/%s after it was %s outside opsync", namespace, name, type.lower())
            owner = reconciler.owner_of(namespace, name)
            if owner is not None:
                await reporting.post(
                    reconciler.kube,
                    Target(owner, namespace, name, None).owner_ref,
                    type_="Normal",
                    reason="DriftRepaired",
                    message=f"Secret {name} was {type.lower()} outside opsync; restored it ({', '.join(outcome.changed) or 'recreated'})",
                )
                if owner.kind == crd.KIND:
                    await _resync_if_failing(memo, namespace, owner)

    # -- Deployment annotation mode --------------------------------------------------------------

    @kopf.on.event(*_DEPLOYMENTS, registry=registry)
    async def track_deployment(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        target = deployment_target(body) if is_annotated_deployment(body) else None
        if type == "DELETED" or target is None or body.get("metadata", {}).get("deletionTimestamp"):
            memo.poller.forget(body["metadata"]["uid"])
        else:
            memo.poller.track(target)

    @kopf.on.resume(*_DEPLOYMENTS, when=is_annotated_deployment, registry=registry)
    @kopf.on.create(*_DEPLOYMENTS, when=is_annotated_deployment, registry=registry)
    @kopf.on.update(*_DEPLOYMENTS, when=is_annotated_deployment, registry=registry)
    async def sync_deployment(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        target = deployment_target(body)
        if target is None:
            meta = body["metadata"]
            await reporting.post(
                reconciler.kube,
                Target(
                    desired.Owner("apps/v1", "Deployment", meta["name"], meta["uid"]),
                    meta["namespace"],
                    "",
                    None,
                ).owner_ref,
                type_="Warning",
                reason="MissingItemName",
                message=f"annotate the Deployment with {desired.ITEM_NAME} to name the Secret for {desired.ITEM_PATH}",
            )
            return
        memo.poller.track(target)
        await sync_target(memo, target, body=None, retry=retry)

    @kopf.on.delete(*_DEPLOYMENTS, when=is_annotated_deployment, registry=registry)
    async def delete_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        memo.poller.forget(body["metadata"]["uid"])
        target = deployment_target(body)
        if target is None:
            return
        others = [
            d
            for d in await reconciler.kube.list_deployments(target.namespace)
            if d["metadata"]["uid"] != target.owner.uid and workloads.uses_secret(d, target.secret_name)
        ]
        if not others:
            await reconciler.delete(target)
        elif await reconciler.release(target):
            logger.info(
                "kept Secret %s/%s: Deployment %s uses it",
                target.namespace,
                target.secret_name,
                others[0]["metadata"]["name"],
            )

    return registry


async def _resync_if_failing(memo: kopf.Memo, namespace: str, owner: desired.Owner) -> None:
    """After a drift repair, re-sync a OnePasswordItem that is not Ready (e.g. TypeChangeRefused,
    which deleting the Secret resolves), so its status does not keep reporting a fixed problem."""
    reconciler: Reconciler = memo.reconciler
    try:
        body = await reconciler.kube.read_item(namespace, owner.name)
    except KubeError as exc:
        logger.warning("could not read OnePasswordItem %s/%s: %s", namespace, owner.name, exc)
        return
    if body is None or body.get("metadata", {}).get("uid") != owner.uid:
        return
    condition = reporting.ready_condition(body.get("status"))
    if condition is not None and condition.get("status") == "True":
        return
    await sync_and_report(memo, item_target(body), body=body, raise_retryable=False)


def _placeholder(namespace: str, name: str) -> Target:
    return Target(desired.Owner("v1", "Secret", name, ""), namespace, name, None)


async def run_operator(
    settings: OperatorSettings,
    connect_config: ConnectConfig,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> bool:
    """Run opsync until stopped: the body of ``opsync run``. False when leadership was lost.

    The health and metrics endpoints serve at once; kopf (and with it every
    handler and the poller) starts only once this replica holds the leader
    Lease, unless leader election is off. A leader that cannot renew its Lease
    stops acting and returns False, so that the process exits and restarts as
    a standby, as controller-runtime does.
    """
    stop = stop_flag or asyncio.Event()
    metrics = Metrics()
    kube = KubeApi(load_api_client())
    ready = asyncio.Event()
    server = OpsServer(
        metrics=metrics,
        metrics_address=settings.metrics_bind_address,
        health_address=settings.health_probe_bind_address,
        ready=ready.is_set,
    )
    await server.start()
    elector: LeaderElector | None = None
    if settings.leader_election:
        elector = LeaderElector(
            kube,
            namespace=settings.lease_namespace or default_lease_namespace(),
            name=settings.lease_name,
            identity=default_identity(),
            duration=settings.lease_duration,
            renew_deadline=settings.lease_duration * 2 / 3,
            retry_period=settings.lease_duration * 2 / 15,
        )
    kopf_stop = asyncio.Event()
    kopf_ready = asyncio.Event()
    kept: asyncio.Task[bool] | None = None
    try:
        if elector is not None:
            ready.set()  # a standby is healthy and ready; it just waits
            if not await elector.acquire(stop):
                return True
            kept = asyncio.create_task(elector.keep(stop), name="opsync lease")
            kept.add_done_callback(lambda _: kopf_stop.set())
        metrics.set_leader(True)
        relay = asyncio.create_task(_relay(stop, kopf_stop), name="opsync stop relay")
        readiness = asyncio.create_task(_relay(kopf_ready, ready), name="opsync readiness")
        if ready_flag is not None:
            readiness.add_done_callback(lambda _: ready_flag.set())
        try:
            namespaces = settings.watch_namespaces
            await kopf.operator(
                registry=build_registry(settings),
                memo=kopf.Memo(connect_config=connect_config, kube=kube, metrics=metrics),
                clusterwide=not namespaces,
                namespaces=namespaces,
                standalone=True,  # one replica runs kopf at a time: the Lease decides which
                stop_flag=kopf_stop,
                ready_flag=kopf_ready,
            )
        finally:
            relay.cancel()
            readiness.cancel()
            metrics.set_leader(False)
        return kept is None or not kept.done() or kept.result()
    finally:
        if kept is not None and not kept.done():
            kept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kept
        if elector is not None:
            await elector.release()
        await server.stop()
        kube.close()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
