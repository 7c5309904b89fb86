"""The operator end to end: real API server, real Connect server, `opsync run` in a subprocess."""

from __future__ import annotations

import base64

from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import OperatorProcess
from tests.integration.helpers import VAULT, eventually, new_item, secret_ready


async def test_item_by_title_becomes_a_secret(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, username="app", password="s3cret-value")
    kube.create_item(op_namespace, "db", f"vaults/{VAULT}/items/{item.title}", labels={"team": "payments"})

    condition = await eventually(lambda: secret_ready(kube, op_namespace, "db"))
    assert condition["reason"] == "Synced"
    assert kube.secret_data(op_namespace, "db") == {"username": b"app", "password": b"s3cret-value"}

    secret = kube.secret(op_namespace, "db")
    assert secret is not None
    body = kube.item(op_namespace, "db")
    assert secret.type == "Opaque"
    assert (
        secret.metadata.annotations["operator.1password.io/item-path"]
        == f"vaults/{item.vault.id}/items/{item.id}"
    )
    assert secret.metadata.annotations["operator.1password.io/item-version"] == str(item.version)
    assert secret.metadata.labels == {"team": "payments", "opsync.io/managed": "true"}
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("OnePasswordItem", "db", body["metadata"]["uid"])
    assert "onepassword.com/finalizer.secret" in body["metadata"]["finalizers"]
    assert body["status"]["itemPath"] == f"vaults/{item.vault.id}/items/{item.id}"
    assert body["status"]["itemVersion"] == item.version
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    await eventually(lambda: [e for e in kube.events(op_namespace, "db") if e.reason == "SecretSynced"])


async def test_item_by_uuid_and_changing_the_path_switches_the_data(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    first = await new_item(connect, key="one")
    second = await new_item(connect, other="two")
    kube.create_item(op_namespace, "switch", f"vaults/{first.vault.id}/items/{first.id}")
    await eventually(lambda: kube.secret_data(op_namespace, "switch") == {"key": b"one"})

    kube.patch_item(op_namespace, "switch", {"spec": {"itemPath": f"vaults/{VAULT}/items/{second.title}"}})
    await eventually(lambda: kube.secret_data(op_namespace, "switch") == {"other": b"two"})
    assert kube.item(op_namespace, "switch")["status"]["itemPath"].endswith(f"/items/{second.id}")


async def test_drift_is_repaired_after_edit_and_delete(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, token="abc")
    kube.create_item(op_namespace, "drift", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: kube.secret_data(op_namespace, "drift") == {"token": b"abc"})

    kube.core.patch_namespaced_secret(
        "drift", op_namespace, {"data": {"token": base64.b64encode(b"tampered").decode(), "extra": "eA=="}}
    )
    await eventually(lambda: kube.secret_data(op_namespace, "drift") == {"token": b"abc"}, within=10)

    kube.core.delete_namespaced_secret("drift", op_namespace)
    await eventually(lambda: kube.secret_data(op_namespace, "drift") == {"token": b"abc"}, within=10)
    await eventually(lambda: [e for e in kube.events(op_namespace, "drift") if e.reason == "DriftRepaired"])


async def test_a_foreign_secret_is_never_overwritten(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    kube.core.create_namespaced_secret(
        op_namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="taken"), string_data={"mine": "keep"}),
    )
    item = await new_item(connect, key="value")
    kube.create_item(op_namespace, "taken", f"vaults/{VAULT}/items/{item.title}")

    condition = await eventually(lambda: kube.ready(op_namespace, "taken"))
    assert (condition["status"], condition["reason"]) == ("False", "SecretConflict")
    assert "will not overwrite" in condition["message"]
    assert kube.secret_data(op_namespace, "taken") == {"mine": b"keep"}
    await eventually(lambda: [e for e in kube.events(op_namespace, "taken") if e.reason == "SecretConflict"])


async def test_deleting_the_item_deletes_its_secret(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="value")
    kube.create_item(op_namespace, "gone", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: kube.secret(op_namespace, "gone"))
    kube.delete_item(op_namespace, "gone")
    await eventually(lambda: kube.secret(op_namespace, "gone") is None)


async def test_missing_vault_and_item_are_reported(
    operator: OperatorProcess, op_namespace: str, kube: Kube
) -> None:
    kube.create_item(op_namespace, "novault", "vaults/Nope/items/whatever")
    kube.create_item(op_namespace, "noitem", f"vaults/{VAULT}/items/does-not-exist")
    kube.create_item(op_namespace, "nopath", None)
    for name, reason in (
        ("novault", "VaultNotFound"),
        ("noitem", "ItemNotFound"),
        ("nopath", "InvalidItemPath"),
    ):
        condition = await eventually(lambda name=name: kube.ready(op_namespace, name))
        assert (condition["status"], condition["reason"]) == ("False", reason), condition
        assert kube.secret(op_namespace, name) is None


async def test_the_same_event_again_raises_the_count_of_one_event(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    """Three deletions, three repairs, one DriftRepaired Event with count 3 (not three Events)."""
    item = await new_item(connect, token="again")
    kube.create_item(op_namespace, "repeat", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: kube.secret_data(op_namespace, "repeat") == {"token": b"again"})
    for _ in range(3):
        secret = kube.secret(op_namespace, "repeat")
        assert secret is not None
        kube.core.delete_namespaced_secret("repeat", op_namespace)
        await eventually(
            lambda old=secret.metadata.uid: (
                (found := kube.secret(op_namespace, "repeat")) is not None and found.metadata.uid != old
            ),
            within=10,
        )

    def repaired() -> list[client.CoreV1Event]:
        events = [e for e in kube.events(op_namespace, "repeat") if e.reason == "DriftRepaired"]
        return events if events and events[0].count == 3 else []

    (event,) = await eventually(repaired)
    assert event.last_timestamp >= event.first_timestamp
