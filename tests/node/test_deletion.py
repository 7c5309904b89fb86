"""Scenario 4: deletion and the controller-manager's garbage collector, for real.

With ``deletionPolicy: Delete`` the Secret goes with its OnePasswordItem; with ``Retain`` it
survives the garbage collector (opsync drops its ownerReference first); the Secret of an
annotation-mode Deployment is collected when the Deployment is deleted.
"""

from __future__ import annotations

import asyncio

from kubernetes import client

from opsync.connect.client import ConnectClient
from opsync.core import crd
from tests.integration.helpers import ITEM_NAME, ITEM_PATH, VAULT, connect_config, new_item, secret_ready
from tests.node.support import SETTLE_SECONDS, Chart, NodeEnv, create_workload, wait_for, workload_body


def _create_item(node: NodeEnv, namespace: str, name: str, path: str, policy: str) -> None:
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name},
        "spec": {"itemPath": path, "deletionPolicy": policy},
    }
    client.CustomObjectsApi(node.api).create_namespaced_custom_object(
        crd.GROUP, crd.VERSION, namespace, crd.PLURAL, body
    )


async def test_delete_collects_the_secret_and_retain_keeps_it_through_the_gc(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    del chart
    async with ConnectClient(connect_config(node.connect)) as connect:
        item = await new_item(connect, password="kept")
    path = f"vaults/{VAULT}/items/{item.id}"
    _create_item(node, namespace, "deleted", path, "Delete")
    _create_item(node, namespace, "retained", path, "Retain")
    for name in ("deleted", "retained"):
        wait_for(lambda name=name: secret_ready(node.kube, namespace, name), what=f"Secret {name}")

    node.kube.delete_item(namespace, "deleted")
    node.kube.delete_item(namespace, "retained")
    wait_for(lambda: node.kube.secret(namespace, "deleted") is None, within=60, what="Secret 'deleted' gone")

    def item_gone(name: str) -> bool:
        return not any(i["metadata"]["name"] == name for i in node.kube.items(namespace))

    wait_for(lambda: item_gone("retained"), within=60, what="the Retain item deleted")
    await asyncio.sleep(SETTLE_SECONDS)  # the garbage collector had its chance
    retained = node.kube.secret(namespace, "retained")
    assert retained is not None, "a Retain Secret survives its item and the garbage collector"
    assert not retained.metadata.owner_references
    assert node.kube.secret_data(namespace, "retained") == {"password": b"kept"}


async def test_deleting_an_annotation_mode_deployment_collects_its_secret(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    del chart
    async with ConnectClient(connect_config(node.connect)) as connect:
        item = await new_item(connect, password="owned")
    annotations = {ITEM_PATH: f"vaults/{VAULT}/items/{item.id}", ITEM_NAME: "deploy-secret"}
    create_workload(
        node,
        namespace,
        workload_body("Deployment", "annotated", node.image.ref, "deploy-secret", annotations=annotations),
    )
    wait_for(
        lambda: node.kube.secret(namespace, "deploy-secret"), within=60, what="the annotation-mode Secret"
    )
    secret = node.kube.secret(namespace, "deploy-secret")
    assert secret is not None
    assert [ref.kind for ref in secret.metadata.owner_references] == ["Deployment"]

    node.apps.delete_namespaced_deployment("annotated", namespace, propagation_policy="Background")
    wait_for(
        lambda: node.kube.secret(namespace, "deploy-secret") is None, within=60, what="the Secret collected"
    )
