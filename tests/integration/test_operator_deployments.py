"""Annotation mode: Deployments annotated with item-path + item-name get that Secret.

There is no controller-manager, so the Deployments never get pods; the operator only needs the
Deployment objects.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import OperatorProcess
from tests.integration.helpers import ITEM_NAME, ITEM_PATH, VAULT, deployment, eventually, new_item

FINALIZER = "onepassword.com/finalizer.secret"


def create(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created = kube.apps.create_namespaced_deployment(namespace, body)
    return {"name": created.metadata.name, "uid": created.metadata.uid}


def owners(kube: Kube, namespace: str, name: str) -> list[tuple[str, str, str, str]] | None:
    secret = kube.secret(namespace, name)
    if secret is None:
        return None
    return [(ref.api_version, ref.kind, ref.name, ref.uid) for ref in secret.metadata.owner_references or []]


def deployment_gone(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.apps.read_namespaced_deployment(name, namespace)
    except client.ApiException as exc:
        return exc.status == 404
    return False


async def test_metadata_annotations_make_a_secret_owned_by_the_deployment(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, username="svc", password="pw")
    path = f"vaults/{VAULT}/items/{item.title}"
    app = create(kube, op_namespace, deployment("app", annotations={ITEM_PATH: path, ITEM_NAME: "app-creds"}))

    await eventually(
        lambda: kube.secret_data(op_namespace, "app-creds") == {"username": b"svc", "password": b"pw"}
    )
    secret = kube.secret(op_namespace, "app-creds")
    assert secret is not None
    assert secret.type == "Opaque"
    assert owners(kube, op_namespace, "app-creds") == [("apps/v1", "Deployment", "app", app["uid"])]
    (reference,) = secret.metadata.owner_references
    assert not reference.controller and not reference.block_owner_deletion
    assert secret.metadata.annotations[ITEM_PATH] == f"vaults/{item.vault.id}/items/{item.id}"
    assert secret.metadata.annotations["operator.1password.io/item-version"] == str(item.version)
    assert secret.metadata.annotations[ITEM_NAME] == "app-creds"  # as the official operator sets it
    live = kube.apps.read_namespaced_deployment("app", op_namespace)
    assert FINALIZER in live.metadata.finalizers
    await eventually(lambda: [e for e in kube.events(op_namespace, "app") if e.reason == "SecretSynced"])


async def test_pod_template_annotations_work_too_and_the_name_is_sanitised(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, token="t0k")
    path = f"vaults/{VAULT}/items/{item.title}"
    web = create(
        kube,
        op_namespace,
        deployment("web", template_annotations={ITEM_PATH: path, ITEM_NAME: "Web Creds_v2"}),
    )
    await eventually(lambda: kube.secret_data(op_namespace, "web-creds-v2") == {"token": b"t0k"})
    assert owners(kube, op_namespace, "web-creds-v2") == [("apps/v1", "Deployment", "web", web["uid"])]
    secret = kube.secret(op_namespace, "web-creds-v2")
    assert secret is not None and secret.metadata.annotations[ITEM_NAME] == "Web Creds_v2"  # as given


async def test_a_deployment_without_item_name_gets_a_warning_and_no_secret(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="value")
    create(
        kube,
        op_namespace,
        deployment("nameless", annotations={ITEM_PATH: f"vaults/{VAULT}/items/{item.title}"}),
    )
    events = await eventually(
        lambda: [e for e in kube.events(op_namespace, "nameless") if e.reason == "MissingItemName"]
    )
    assert events[0].type == "Warning"
    assert ITEM_NAME in events[0].message
    assert kube.core.list_namespaced_secret(op_namespace, label_selector="opsync.io/managed").items == []


async def test_deleting_the_deployment_deletes_its_secret(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="value")
    path = f"vaults/{VAULT}/items/{item.title}"
    create(kube, op_namespace, deployment("solo", annotations={ITEM_PATH: path, ITEM_NAME: "solo-creds"}))
    await eventually(lambda: kube.secret(op_namespace, "solo-creds"))
    await eventually(
        lambda: (
            FINALIZER
            in (kube.apps.read_namespaced_deployment("solo", op_namespace).metadata.finalizers or [])
        )
    )

    kube.apps.delete_namespaced_deployment("solo", op_namespace)
    await eventually(lambda: deployment_gone(kube, op_namespace, "solo"))
    await eventually(lambda: kube.secret(op_namespace, "solo-creds") is None)


async def test_a_secret_shared_by_two_annotated_deployments_outlives_the_first(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="shared")
    annotations = {ITEM_PATH: f"vaults/{VAULT}/items/{item.title}", ITEM_NAME: "shared-creds"}
    first = create(kube, op_namespace, deployment("first", annotations=annotations))
    await eventually(lambda: kube.secret(op_namespace, "shared-creds"))
    second = create(kube, op_namespace, deployment("second", annotations=annotations))

    # Both Deployments own the Secret; neither is told it conflicts.
    def both_own() -> bool:
        uids = {uid for *_, uid in owners(kube, op_namespace, "shared-creds") or []}
        return uids == {first["uid"], second["uid"]}

    await eventually(both_own)
    for name in ("first", "second"):
        assert [e.reason for e in kube.events(op_namespace, name) if e.type == "Warning"] == []

    kube.apps.delete_namespaced_deployment("first", op_namespace)
    # Gone means the operator's deletion handler has finished (it holds the finalizer until then).
    await eventually(lambda: deployment_gone(kube, op_namespace, "first"))
    # Kept, and no longer owned by the deleted Deployment (so no garbage collector deletes it).
    assert owners(kube, op_namespace, "shared-creds") == [("apps/v1", "Deployment", "second", second["uid"])]
    # The second Deployment goes on syncing the Secret.
    kube.apps.patch_namespaced_deployment(
        "second", op_namespace, {"metadata": {"annotations": {"operator.1password.io/auto-restart": "false"}}}
    )

    def resynced_by_second() -> bool:
        secret = kube.secret(op_namespace, "shared-creds")
        assert secret is not None, "the Secret was deleted though another Deployment uses it"
        return secret.metadata.annotations.get("operator.1password.io/auto-restart") == "false"

    await eventually(resynced_by_second)
    assert kube.secret_data(op_namespace, "shared-creds") == {"key": b"shared"}

    kube.apps.delete_namespaced_deployment("second", op_namespace)
    await eventually(lambda: kube.secret(op_namespace, "shared-creds") is None)


CONTAINER = {"name": "app", "image": "registry.invalid/app:1"}
USES = {
    "env": {
        "containers": [
            {
                **CONTAINER,
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "used-creds", "key": "key"}}}],
            }
        ]
    },
    "init-env": {
        "containers": [CONTAINER],
        "initContainers": [
            {
                **CONTAINER,
                "name": "init",
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "used-creds", "key": "key"}}}],
            }
        ],
    },
    "env-from": {"containers": [{**CONTAINER, "envFrom": [{"secretRef": {"name": "used-creds"}}]}]},
    "volume": {
        "containers": [CONTAINER],
        "volumes": [
            {"name": "config", "configMap": {"name": "unrelated"}},
            {"name": "creds", "secret": {"secretName": "used-creds"}},
        ],
    },
    "projected": {
        "containers": [CONTAINER],
        "volumes": [{"name": "all", "projected": {"sources": [{"secret": {"name": "used-creds"}}]}}],
    },
}


@pytest.mark.parametrize("use", sorted(USES))
async def test_a_secret_used_by_another_deployments_pods_outlives_its_deployment(
    use: str, operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="used")
    annotations = {ITEM_PATH: f"vaults/{VAULT}/items/{item.title}", ITEM_NAME: "used-creds"}
    create(kube, op_namespace, deployment("maker", annotations=annotations))
    await eventually(lambda: kube.secret(op_namespace, "used-creds"))
    create(kube, op_namespace, deployment("user", pod_spec=USES[use]))

    kube.apps.delete_namespaced_deployment("maker", op_namespace)
    # Gone means the operator's deletion handler has finished (it holds the finalizer until then).
    await eventually(lambda: deployment_gone(kube, op_namespace, "maker"))
    assert kube.secret_data(op_namespace, "used-creds") == {"key": b"used"}
    # Not owned by the deleted Deployment any more, so no garbage collector deletes it either.
    assert owners(kube, op_namespace, "used-creds") == []
