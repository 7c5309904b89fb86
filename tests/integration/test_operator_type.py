"""The CR's top-level ``type`` becomes the Secret's type; a later change is refused, never applied."""

from __future__ import annotations

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import OperatorProcess
from tests.integration.helpers import VAULT, eventually, new_item, secret_ready


async def test_the_type_of_the_item_becomes_the_type_of_the_secret(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, username="admin", password="pw")
    kube.create_item(
        op_namespace, "basic", f"vaults/{VAULT}/items/{item.title}", type="kubernetes.io/basic-auth"
    )
    await eventually(lambda: secret_ready(kube, op_namespace, "basic"))
    secret = kube.secret(op_namespace, "basic")
    assert secret is not None
    assert secret.type == "kubernetes.io/basic-auth"
    assert kube.secret_data(op_namespace, "basic") == {"username": b"admin", "password": b"pw"}


async def test_an_empty_type_means_opaque_and_switching_between_them_changes_nothing(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="value")
    kube.create_item(op_namespace, "empty", f"vaults/{VAULT}/items/{item.title}", type="")
    await eventually(lambda: secret_ready(kube, op_namespace, "empty"))
    secret = kube.secret(op_namespace, "empty")
    assert secret is not None and secret.type == "Opaque"
    generation = kube.item(op_namespace, "empty")["metadata"]["generation"]

    kube.patch_item(op_namespace, "empty", {"type": "Opaque"})

    def observed() -> dict[str, object] | None:
        status = kube.item(op_namespace, "empty").get("status") or {}
        return status if (status.get("observedGeneration") or 0) > generation else None

    status = await eventually(observed)
    condition = kube.ready(op_namespace, "empty")
    assert condition is not None and (condition["status"], condition["reason"]) == ("True", "Synced")
    assert status["observedGeneration"] == kube.item(op_namespace, "empty")["metadata"]["generation"]
    after = kube.secret(op_namespace, "empty")
    assert after is not None and after.metadata.resource_version == secret.metadata.resource_version


async def test_changing_the_type_afterwards_is_refused_and_the_secret_is_unchanged(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, username="admin", password="pw")
    kube.create_item(op_namespace, "retype", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: secret_ready(kube, op_namespace, "retype"))
    before = kube.secret(op_namespace, "retype")
    assert before is not None and before.type == "Opaque"

    kube.patch_item(op_namespace, "retype", {"type": "kubernetes.io/basic-auth"})

    def refused() -> dict[str, str] | None:
        condition = kube.ready(op_namespace, "retype")
        return condition if condition and condition["status"] == "False" else None

    condition = await eventually(refused)
    assert condition["reason"] == "TypeChangeRefused"
    assert "Opaque" in condition["message"] and "kubernetes.io/basic-auth" in condition["message"]
    assert "delete the Secret" in condition["message"]
    after = kube.secret(op_namespace, "retype")
    assert after is not None
    assert after.type == "Opaque"
    assert after.metadata.resource_version == before.metadata.resource_version
    await eventually(
        lambda: [e for e in kube.events(op_namespace, "retype") if e.reason == "TypeChangeRefused"]
    )

    # As the message says: deleting the Secret lets opsync recreate it with the new type.
    kube.core.delete_namespaced_secret("retype", op_namespace)

    def recreated() -> bool:
        secret = kube.secret(op_namespace, "retype")
        return secret is not None and secret.type == "kubernetes.io/basic-auth"

    await eventually(recreated)
    assert kube.secret_data(op_namespace, "retype") == {"username": b"admin", "password": b"pw"}
    condition = await eventually(lambda: secret_ready(kube, op_namespace, "retype"))
    assert condition["reason"] == "Synced"
