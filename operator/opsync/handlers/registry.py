"""Every kopf handler of opsync, registered on a fresh registry built from the settings.

* OnePasswordItem: create/update/resume sync the Secret; delete removes it
  (kopf adds our finalizer, ``onepassword.com/finalizer.secret``); a daemon per
  item re-checks it every ``POLLING_INTERVAL``.
* Secrets labelled ``opsync.io/managed``: any edit or deletion is repaired from
  the last synced state within seconds, without asking Connect.
* Deployments annotated ``operator.1password.io/item-path`` + ``item-name``:
  the official operator's annotation mode (polled like items). Deleting one
  deletes its Secret unless another Deployment uses it (then it only stops
  owning it); several annotated Deployments may share one Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from opsync import crd, desired, workloads
from opsync.connect import ConnectClient, ConnectConfig
from opsync.errors import KubeError
from opsync.handlers import reporting
from opsync.kube import KubeApi, load_api_client
from opsync.mapping import sanitize_secret_name
from opsync.reconcile import Reconciler, Target, describe_failure
from opsync.settings import OperatorSettings

logger = logging.getLogger(__name__)

PROGRESS_PREFIX = "opsync.io"
_CR = (crd.GROUP, crd.VERSION, crd.PLURAL)
_DEPLOYMENTS = ("apps", "v1", "deployments")


# -- targets -------------------------------------------------------------------------------------


def item_target(body: Mapping[str, Any]) -> Target:
    meta = body.get("metadata", {})
    spec = body.get("spec") or {}
    return Target(
        owner=desired.Owner(crd.API_VERSION, crd.KIND, meta["name"], meta["uid"]),
        namespace=meta["namespace"],
        secret_name=meta["name"],
        item_path=spec.get("itemPath"),
        secret_type=body.get("type"),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


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
    reconciler: Reconciler, target: Target, *, body: Mapping[str, Any] | None, retry: int = 0
) -> None:
    try:
        outcome = await reconciler.sync(target)
    except Exception as exc:
        failure = describe_failure(exc, target)
        if failure.reason == "InternalError":
            logger.exception("sync of %s/%s failed unexpectedly", target.namespace, target.secret_name)
        await reporting.report_failure(reconciler.kube, target, failure, body=body, retry=retry)
        return
    await reporting.report_success(reconciler.kube, target, outcome, body=body)


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
        settings.peering.mandatory = False
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        connect = ConnectClient(memo.connect_config)
        kube = KubeApi(load_api_client())
        memo.reconciler = Reconciler(
            connect=connect,
            kube=kube,
            allow_empty_values=config.allow_empty_values,
            copy_annotations=config.enable_annotations,
        )

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler | None = getattr(memo, "reconciler", None)
        if reconciler is not None:
            await reconciler.connect.aclose()
            reconciler.kube.close()

    @kopf.on.probe(id="connect", registry=registry)
    async def connect_configured(memo: kopf.Memo, **_: Any) -> str:
        # Liveness must not depend on Connect: restarting opsync cannot fix Connect.
        return str(memo.connect_config.host)

    # -- OnePasswordItem -------------------------------------------------------------------------

    @kopf.on.resume(*_CR, registry=registry)
    @kopf.on.create(*_CR, registry=registry)
    @kopf.on.update(*_CR, registry=registry)
    async def sync_item(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        await sync_and_report(memo.reconciler, item_target(body), body=body, retry=retry)

    @kopf.on.delete(*_CR, registry=registry)
    async def delete_item(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        target = item_target(body)
        reconciler: Reconciler = memo.reconciler
        if await reconciler.delete(target):
            logger.info("deleted Secret %s/%s with its OnePasswordItem", target.namespace, target.secret_name)

    @kopf.daemon(*_CR, registry=registry, cancellation_timeout=5.0, initial_delay=config.polling_interval)
    async def poll_item(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        while not stopped:
            with contextlib.suppress(kopf.TemporaryError):  # status says why; the next poll retries
                await sync_and_report(reconciler, item_target(body), body=body)
            await stopped.wait(config.polling_interval)

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
            logger.info("restored Secret %s/%s after it was %s outside opsync", namespace, name, type.lower())
            owner = reconciler.owner_of(namespace, name)
            if owner is not None:
                await reporting.post(
                    reconciler.kube,
                    reporting.owner_ref(Target(owner, namespace, name, None)),
                    type_="Normal",
                    reason="DriftRepaired",
                    message=f"Secret {name} was {type.lower()} outside opsync; restored it ({', '.join(outcome.changed) or 'recreated'})",
                )
                if owner.kind == crd.KIND:
                    await _resync_if_failing(reconciler, namespace, owner)

    # -- Deployment annotation mode --------------------------------------------------------------

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
                reporting.owner_ref(
                    Target(
                        desired.Owner("apps/v1", "Deployment", meta["name"], meta["uid"]),
                        meta["namespace"],
                        "",
                        None,
                    )
                ),
                type_="Warning",
                reason="MissingItemName",
                message=f"annotate the Deployment with {desired.ITEM_NAME} to name the Secret for {desired.ITEM_PATH}",
            )
            return
        await sync_and_report(reconciler, target, body=None, retry=retry)

    @kopf.daemon(
        *_DEPLOYMENTS,
        when=is_annotated_deployment,
        registry=registry,
        cancellation_timeout=5.0,
        initial_delay=config.polling_interval,
    )
    async def poll_deployment(
        stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        # The official poller refreshes annotation-mode Secrets too, not only those of items.
        reconciler: Reconciler = memo.reconciler
        while not stopped:
            target = deployment_target(body)
            if target is not None:
                with contextlib.suppress(kopf.TemporaryError):  # Events say why; the next poll retries
                    await sync_and_report(reconciler, target, body=None)
            await stopped.wait(config.polling_interval)

    @kopf.on.delete(*_DEPLOYMENTS, when=is_annotated_deployment, registry=registry)
    async def delete_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
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


async def _resync_if_failing(reconciler: Reconciler, namespace: str, owner: desired.Owner) -> None:
    """After a drift repair, re-sync a OnePasswordItem that is not Ready (e.g. TypeChangeRefused,
    which deleting the Secret resolves), so its status does not keep reporting a fixed problem."""
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
    with contextlib.suppress(kopf.TemporaryError):  # status says why; kopf's own retries go on
        await sync_and_report(reconciler, item_target(body), body=body)


def _placeholder(namespace: str, name: str) -> Target:
    return Target(desired.Owner("v1", "Secret", name, ""), namespace, name, None)


async def run_operator(
    settings: OperatorSettings,
    connect_config: ConnectConfig,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run opsync until stopped: the body of ``opsync run``."""
    namespaces = settings.watch_namespaces
    await kopf.operator(
        registry=build_registry(settings),
        memo=kopf.Memo(connect_config=connect_config),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint or None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
