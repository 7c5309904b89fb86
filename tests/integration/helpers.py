"""What the integration tests share besides fixtures: the Connect data, the process starters, builders.

Test modules import helpers from here, never from each other or from a conftest.
The processes themselves are started by :mod:`opsync.tooling.harness` (as the
demo and the benchmark start them), all under :data:`CHILDREN`, whose watchdog
kills them should pytest die without stopping them; the Kubernetes calls go
through :class:`bench.kube.Kube`.

* Connect: :data:`DATA` (vaults ``Integration``, ``Other`` and a locked one),
  :func:`start_connect`, :func:`connect_config`, :func:`vault`, :func:`new_item`,
  :func:`set_field`.
* The operator: :func:`start_operator` (returns once it watches new namespaces),
  :func:`running_operator`, :func:`watched_namespace`, :func:`make_namespace`.
* Waiting: :func:`eventually`, :func:`secret_ready`.
* Objects: :func:`deployment`, :func:`workload`, :func:`pod_spec`, and the Rollout
  CRD (:func:`install_rollout_crd`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.connect.models import FullItem, PatchOperation, Vault
from opsync.tooling.harness import Children, ConnectServerProcess, OperatorProcess
from tests.conftest import Cluster

T = TypeVar("T")

CHILDREN = Children()
"""Every Connect server and operator the integration tests start (closed at the session's end)."""

VAULT = "Integration"
OTHER_VAULT = "Other"
LOCKED_VAULT_ID = "lockedvault000000000000001"

DATA: dict[str, Any] = {
    "vaults": [
        {"name": VAULT, "description": "items the integration tests sync", "items": []},
        {"name": OTHER_VAULT, "items": []},
        {"id": LOCKED_VAULT_ID, "name": "Locked", "items": [{"title": "sealed", "category": "LOGIN"}]},
    ]
}

ITEM_PATH = "operator.1password.io/item-path"
ITEM_NAME = "operator.1password.io/item-name"
ROLLOUT_CRD = "rollouts.argoproj.io"


# -- Connect ---------------------------------------------------------------------------------------


def start_connect(
    directory: Path, *, vaults: list[str] | None = None, data: dict[str, Any] | None = None
) -> ConnectServerProcess:
    """A Connect server on ``data`` (default: :data:`DATA`), with a token for ``vaults``
    (default: ``Integration`` and ``Other``); its log is ``connect.log`` in ``directory``."""
    return ConnectServerProcess.start(
        CHILDREN,
        data_path=directory / "connect-data.yaml",
        data=DATA if data is None else data,
        vaults=vaults or [VAULT, OTHER_VAULT],
        log=directory / "connect.log",
    )


def connect_config(server: ConnectServerProcess, **overrides: Any) -> ConnectConfig:
    """A client configuration for ``server``, with short back-offs."""
    return ConnectConfig(
        host=server.url, token=server.token, backoff_initial=0.05, backoff_max=0.2, **overrides
    )


async def vault(connect: ConnectClient, name: str = VAULT) -> Vault:
    (found,) = await connect.find_vaults(name)
    return found


async def new_item(connect: ConnectClient, *, title: str | None = None, **fields: str) -> FullItem:
    """A LOGIN item in :data:`VAULT` with a STRING field per keyword."""
    target = await vault(connect)
    item = FullItem.model_validate(
        {
            "title": title or f"item-{uuid.uuid4().hex[:8]}",
            "category": "LOGIN",
            "vault": {"id": target.id},
            "fields": [{"label": label, "value": value, "type": "STRING"} for label, value in fields.items()],
        }
    )
    return await connect.create_item(target.id, item)


async def set_field(connect: ConnectClient, item: FullItem, label: str, value: str) -> None:
    await connect.patch_item(
        str(item.vault.id),
        str(item.id),
        [PatchOperation(op="replace", path=f"/fields/{label}/value", value=value)],
    )


# -- the operator ----------------------------------------------------------------------------------


def start_operator(
    cluster: Cluster,
    connect: ConnectServerProcess,
    directory: Path,
    *,
    namespace_prefix: str,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    standby: bool = False,
) -> OperatorProcess:
    """``opsync run`` watching ``<namespace_prefix>*``; returns once it watches new namespaces,
    or with ``standby`` once it waits for another replica's Lease."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        # Leader election on, as in production; a Lease of its own per operator process
        # unless the test gives one (env) to make replicas compete.
        "OPSYNC_LEASE_NAME": f"opsync-test-{uuid.uuid4().hex[:10]}",
        "OPSYNC_LEASE_DURATION": "6",
        "KUBECONFIG": str(cluster.kubeconfig),
        "OP_CONNECT_HOST": connect.url,
        "OP_CONNECT_TOKEN": connect.token,
        "WATCH_NAMESPACE": f"{namespace_prefix}*",
        "POLLING_INTERVAL": "3600",
        "OPSYNC_CONNECT_BACKOFF_INITIAL": "0.05",
        "OPSYNC_CONNECT_BACKOFF_MAX": "0.2",
        "OPSYNC_DRIFT_RESYNC_SECONDS": "0.2",
        **(env or {}),
    }
    operator = OperatorProcess.start(
        CHILDREN,
        log=directory / f"operator-{namespace_prefix}.log",
        settings=settings,
        args=args,
        log_level="debug",
        health=True,
    )
    try:
        if standby:
            assert operator.wait_log("standing by: another replica holds Lease"), operator.logs()[-3000:]
            return operator
        assert operator.wait_log("Starting the watch-stream for namespaces.v1 cluster-wide"), operator.logs()[
            -3000:
        ]
        _wait_watching_new_namespaces(cluster, operator)
    except BaseException:
        operator.stop()
        raise
    return operator


def exact_operator(
    kubeconfig: Path,
    connect: ConnectServerProcess,
    log: Path,
    namespace: str,
    *,
    env: dict[str, str] | None = None,
    log_level: str = "info",
) -> OperatorProcess:
    """``opsync run`` watching exactly ``namespace``, as users run it (``--log-level info``, a
    Lease of its own), returning at once: unlike :func:`start_operator`, kopf neither scans
    namespaces nor waits for a probe namespace."""
    return OperatorProcess.start(
        CHILDREN,
        log=log,
        settings={
            "KUBECONFIG": str(kubeconfig),
            "OP_CONNECT_HOST": connect.url,
            "OP_CONNECT_TOKEN": connect.token,
            "WATCH_NAMESPACE": namespace,
            "OPSYNC_LEASE_NAME": f"opsync-test-{uuid.uuid4().hex[:10]}",
            **(env or {}),
        },
        log_level=log_level,
    )


def namespace_prefix(operator: OperatorProcess) -> str:
    """The prefix of the namespaces ``operator`` watches (started by :func:`start_operator`)."""
    return operator.watch_namespace.removesuffix("*")


def _wait_watching_new_namespaces(cluster: Cluster, operator: OperatorProcess) -> None:
    """Return once a namespace created now is noticed by the operator.

    kopf lists namespaces once, then starts a watch that lists them again and ignores that
    second listing, so a namespace created between the two is not watched until it changes.
    A probe namespace created after the first listing shows when the watch is live: its
    resources get watched; a probe lost in that window is replaced by another.
    """
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    try:
        for _attempt in range(10):
            probe = make_namespace(api, f"{namespace_prefix(operator)}probe-")
            try:
                if operator.wait_log(f"onepassworditems.v1.onepassword.com in {probe!r}", timeout=3):
                    return
            finally:
                core.delete_namespace(probe)
        raise AssertionError(f"operator never noticed a new namespace:\n{operator.logs()[-3000:]}")
    finally:
        api.close()


@contextlib.contextmanager
def running_operator(
    cluster: Cluster, connect: ConnectServerProcess, directory: Path, **options: Any
) -> Iterator[OperatorProcess]:
    """An operator process (see start_operator) that is stopped however the block ends."""
    process = start_operator(cluster, connect, directory, **options)
    try:
        yield process
    finally:
        process.stop()


def make_namespace(api_client: client.ApiClient, prefix: str) -> str:
    return Kube(api_client).create_namespace(f"{prefix}{uuid.uuid4().hex[:10]}")


@contextlib.contextmanager
def watched_namespace(api_client: client.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    """A new namespace that ``operator`` watches, deleted at the end."""
    name = make_namespace(api_client, namespace_prefix(operator))
    try:
        yield name
    finally:
        client.CoreV1Api(api_client).delete_namespace(name)


# -- waiting ---------------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]], within: float = 30.0
) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last error after ``within`` s."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except (AssertionError, client.ApiException) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s") from last
        await asyncio.sleep(0.2)


def secret_ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    condition = kube.ready(namespace, name)
    return condition if condition and condition["status"] == "True" else None


# -- objects ---------------------------------------------------------------------------------------


def deployment(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
    pod_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": template_annotations or {}},
                "spec": pod_spec or {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def pod_spec(secret: str = "", how: str = "") -> dict[str, Any]:
    """A pod spec using ``secret`` as ``how`` says (env, envFrom, volume, projected), or not at all."""
    container: dict[str, Any] = {"name": "app", "image": "registry.invalid/app:1"}
    volumes: list[dict[str, Any]] = []
    if how == "env":
        container["env"] = [{"name": "P", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]
    elif how == "envFrom":
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    elif how == "volume":
        volumes = [{"name": "s", "secret": {"secretName": secret}}]
    elif how == "projected":
        volumes = [{"name": "s", "projected": {"sources": [{"secret": {"name": secret}}]}}]
    spec: dict[str, Any] = {"containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    return spec


def workload(
    kind: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    body: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1" if kind == "Rollout" else "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
    }
    if kind == "StatefulSet":
        body["spec"]["serviceName"] = name
    return body


def rollout_crd_body() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": ROLLOUT_CRD},
        "spec": {
            "group": "argoproj.io",
            "scope": "Namespaced",
            "names": {
                "plural": "rollouts",
                "singular": "rollout",
                "kind": "Rollout",
                "listKind": "RolloutList",
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def crd_exists(api_client: client.ApiClient) -> bool:
    try:
        client.ApiextensionsV1Api(api_client).read_custom_resource_definition(ROLLOUT_CRD)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def install_rollout_crd(api_client: client.ApiClient) -> None:
    """Create the Rollout CRD unless it exists (idempotent; never deleted: the cluster is shared),
    then wait until Rollouts can be listed."""
    ext = client.ApiextensionsV1Api(api_client)
    if not crd_exists(api_client):
        try:
            ext.create_custom_resource_definition(rollout_crd_body())
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    custom = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + 60
    while True:
        try:
            custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", "default", "rollouts")
            return
        except client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)
