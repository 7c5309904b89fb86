"""Manifests written for the official 1Password operator apply unchanged with kubectl and sync.

The shapes are the official README's: a ``OnePasswordItem`` (with the top-level ``type`` and the
auto-restart annotation), a ``kind: OnePasswordItemList`` bundle with ``items:``, and an
annotated Deployment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling import binaries
from opsync.tooling.harness import OperatorProcess
from tests.conftest import Cluster
from tests.integration.helpers import VAULT, eventually, new_item, secret_ready

SINGLE = """\
apiVersion: onepassword.com/v1
kind: OnePasswordItem
metadata:
  name: {name}
  annotations:
    operator.1password.io/auto-restart: "true"
type: kubernetes.io/basic-auth
spec:
  itemPath: "vaults/{vault}/items/{item}"
"""

BUNDLE = """\
apiVersion: onepassword.com/v1
kind: OnePasswordItemList
items:
  - apiVersion: onepassword.com/v1
    kind: OnePasswordItem
    metadata:
      name: bundle-one
    spec:
      itemPath: "vaults/{vault}/items/{one}"
  - apiVersion: onepassword.com/v1
    kind: OnePasswordItem
    metadata:
      name: bundle-two
    spec:
      itemPath: "vaults/{vault_id}/items/{two_id}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: deployment-example
  annotations:
    operator.1password.io/item-path: "vaults/{vault}/items/{one}"
    operator.1password.io/item-name: "deployment-secret"
spec:
  replicas: 1
  selector:
    matchLabels:
      app: example
  template:
    metadata:
      labels:
        app: example
    spec:
      containers:
        - name: example
          image: registry.invalid/example:1
"""


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return binaries.ensure(["kubectl"])["kubectl"]


def apply(kubectl: Path, cluster: Cluster, namespace: str, manifest: Path) -> str:
    result = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            "apply",
            "-f",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_official_manifests_apply_unchanged_and_become_secrets(
    operator: OperatorProcess,
    op_namespace: str,
    kube: Kube,
    connect: ConnectClient,
    cluster: Cluster,
    kubectl: Path,
    tmp_path: Path,
) -> None:
    login = await new_item(connect, username="admin", password="pw")
    one = await new_item(connect, key="one")
    two = await new_item(connect, key="two")
    single = tmp_path / "item.yaml"
    single.write_text(SINGLE.format(name="official", vault=VAULT, item=login.title))
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(BUNDLE.format(vault=VAULT, one=one.title, vault_id=two.vault.id, two_id=two.id))

    assert "onepassworditem.onepassword.com/official created" in apply(kubectl, cluster, op_namespace, single)
    out = apply(kubectl, cluster, op_namespace, bundle)
    for created in ("bundle-one", "bundle-two", "deployment-example"):
        assert f"/{created} created" in out, out

    for name in ("official", "bundle-one", "bundle-two"):
        await eventually(lambda name=name: secret_ready(kube, op_namespace, name))
    secret = kube.secret(op_namespace, "official")
    assert secret is not None and secret.type == "kubernetes.io/basic-auth"
    assert secret.metadata.annotations["operator.1password.io/auto-restart"] == "true"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in secret.metadata.annotations
    assert kube.secret_data(op_namespace, "official") == {"username": b"admin", "password": b"pw"}
    assert kube.secret_data(op_namespace, "bundle-one") == {"key": b"one"}
    assert kube.secret_data(op_namespace, "bundle-two") == {"key": b"two"}
    await eventually(lambda: kube.secret_data(op_namespace, "deployment-secret") == {"key": b"one"})

    # Re-applying the same files changes nothing.
    assert "unchanged" in apply(kubectl, cluster, op_namespace, bundle)
    assert "unchanged" in apply(kubectl, cluster, op_namespace, single)
