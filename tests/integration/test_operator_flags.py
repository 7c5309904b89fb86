"""Labels and annotations of the CR on the Secret, and the official flags that change that.

Labels are always copied. Annotations are copied only with ``--enable-annotations``, and empty
fields are kept only with ``--allow-empty-values``: a second operator runs with both flags,
watching ``opa-*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess
from tests.conftest import Cluster
from tests.integration.helpers import (
    VAULT,
    eventually,
    new_item,
    running_operator,
    secret_ready,
    watched_namespace,
)

PREFIX = "opa-"
ITEM_PATH = "operator.1password.io/item-path"
ITEM_VERSION = "operator.1password.io/item-version"
AUTO_RESTART = "operator.1password.io/auto-restart"
CR_ANNOTATIONS = {
    "team.example.com/owner": "payments",
    "note": "rotated quarterly",
    AUTO_RESTART: "true",
    "kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}',
}


@pytest.fixture(scope="module")
def flag_operator(
    cluster: Cluster,
    crds_installed: None,
    connect_server: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        connect_server,
        Path(tmp_path_factory.mktemp("flag-operator")),
        namespace_prefix=PREFIX,
        args=("--enable-annotations", "--allow-empty-values"),
    ) as process:
        yield process


@pytest.fixture
def flag_namespace(api_client: client.ApiClient, flag_operator: OperatorProcess) -> Iterator[str]:
    with watched_namespace(api_client, flag_operator) as name:
        yield name


def metadata(kube: Kube, namespace: str, name: str) -> client.V1ObjectMeta:
    secret = kube.secret(namespace, name)
    assert secret is not None
    return secret.metadata


async def test_by_default_labels_are_copied_annotations_and_empty_values_are_not(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, user="u", blank="")
    kube.create_item(
        op_namespace,
        "plain",
        f"vaults/{VAULT}/items/{item.title}",
        labels={"app.kubernetes.io/name": "shop", "tier": "db"},
        annotations=CR_ANNOTATIONS,
    )
    condition = await eventually(lambda: secret_ready(kube, op_namespace, "plain"))
    assert kube.secret_data(op_namespace, "plain") == {"user": b"u"}
    assert "'blank'" in condition["message"] and "--allow-empty-values" in condition["message"]
    meta = metadata(kube, op_namespace, "plain")
    assert meta.labels == {"app.kubernetes.io/name": "shop", "tier": "db", "opsync.io/managed": "true"}
    # Only the 1Password annotations: auto-restart is copied from the CR as the official operator does.
    assert meta.annotations == {
        ITEM_PATH: f"vaults/{item.vault.id}/items/{item.id}",
        ITEM_VERSION: str(item.version),
        AUTO_RESTART: "true",
    }


async def test_with_enable_annotations_the_crs_annotations_are_copied_and_follow_changes(
    flag_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, user="u")
    kube.create_item(
        flag_namespace, "annotated", f"vaults/{VAULT}/items/{item.title}", annotations=CR_ANNOTATIONS
    )
    await eventually(lambda: secret_ready(kube, flag_namespace, "annotated"))
    annotations = metadata(kube, flag_namespace, "annotated").annotations
    assert annotations == {
        "team.example.com/owner": "payments",
        "note": "rotated quarterly",
        AUTO_RESTART: "true",
        ITEM_PATH: f"vaults/{item.vault.id}/items/{item.id}",
        ITEM_VERSION: str(item.version),
        "opsync.io/copied-annotations": "note,team.example.com/owner",
    }
    # Neither kopf's bookkeeping (opsync.io/...) nor kubectl's last-applied-configuration is copied.
    assert not [key for key in annotations if key.startswith(("kopf.", "kubectl."))]

    # A changed annotation is updated, a removed one removed, a new one added.
    kube.patch_item(
        flag_namespace,
        "annotated",
        {
            "metadata": {
                "annotations": {"note": "rotated monthly", "team.example.com/owner": None, "new": "x"}
            }
        },
    )

    def followed() -> bool:
        now = metadata(kube, flag_namespace, "annotated").annotations
        assert "team.example.com/owner" not in now, now
        return now.get("note") == "rotated monthly" and now.get("new") == "x"

    await eventually(followed)
    # Annotations that something else put on the Secret are left alone.
    kube.core.patch_namespaced_secret(
        "annotated", flag_namespace, {"metadata": {"annotations": {"other-tool/seen": "yes"}}}
    )
    kube.patch_item(flag_namespace, "annotated", {"metadata": {"annotations": {"new": "y"}}})
    await eventually(lambda: metadata(kube, flag_namespace, "annotated").annotations.get("new") == "y")
    assert metadata(kube, flag_namespace, "annotated").annotations["other-tool/seen"] == "yes"


async def test_with_allow_empty_values_empty_fields_are_kept(
    flag_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, user="u", blank="")
    kube.create_item(flag_namespace, "empties", f"vaults/{VAULT}/items/{item.title}")
    condition = await eventually(lambda: secret_ready(kube, flag_namespace, "empties"))
    data = kube.secret_data(flag_namespace, "empties")
    assert data is not None
    assert data["user"] == b"u" and data["blank"] == b""
    assert "'blank'" not in condition["message"]


async def test_an_invalid_auto_restart_value_fails_the_sync(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, user="u")
    kube.create_item(
        op_namespace,
        "badrestart",
        f"vaults/{VAULT}/items/{item.title}",
        annotations={AUTO_RESTART: "sometimes"},
    )
    condition = await eventually(lambda: kube.ready(op_namespace, "badrestart"))
    assert (condition["status"], condition["reason"]) == ("False", "InvalidAnnotation")
    assert AUTO_RESTART in condition["message"] and "true or false" in condition["message"]
    assert kube.secret(op_namespace, "badrestart") is None

    kube.patch_item(op_namespace, "badrestart", {"metadata": {"annotations": {AUTO_RESTART: "False"}}})
    await eventually(lambda: secret_ready(kube, op_namespace, "badrestart"))
    assert metadata(kube, op_namespace, "badrestart").annotations[AUTO_RESTART] == "False"
