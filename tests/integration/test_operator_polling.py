"""Polling: a change made in 1Password reaches the Secrets of items and of annotated Deployments.

This module runs an operator of its own polling every second (``POLLING_INTERVAL=1``), watching
``opp-*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.connect.models import PatchOperation
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess
from tests.conftest import Cluster
from tests.integration.helpers import (
    ITEM_NAME,
    ITEM_PATH,
    VAULT,
    deployment,
    eventually,
    new_item,
    running_operator,
    secret_ready,
    watched_namespace,
)

PREFIX = "opp-"


@pytest.fixture(scope="module")
def polling_operator(
    cluster: Cluster,
    crds_installed: None,
    connect_server: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        connect_server,
        Path(tmp_path_factory.mktemp("polling-operator")),
        namespace_prefix=PREFIX,
        env={"POLLING_INTERVAL": "1"},
    ) as process:
        yield process


@pytest.fixture
def poll_namespace(api_client: client.ApiClient, polling_operator: OperatorProcess) -> Iterator[str]:
    with watched_namespace(api_client, polling_operator) as name:
        yield name


async def test_an_item_changed_in_1password_reaches_every_secret_made_from_it(
    poll_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, password="v1")
    path = f"vaults/{VAULT}/items/{item.title}"
    kube.create_item(poll_namespace, "polled", path)
    kube.apps.create_namespaced_deployment(
        poll_namespace, deployment("polled-app", annotations={ITEM_PATH: path, ITEM_NAME: "polled-app"})
    )
    await eventually(lambda: secret_ready(kube, poll_namespace, "polled"))
    await eventually(lambda: kube.secret_data(poll_namespace, "polled-app") == {"password": b"v1"})
    steady = kube.secret(poll_namespace, "polled")
    assert steady is not None

    await connect.patch_item(
        str(item.vault.id),
        str(item.id),
        [PatchOperation(op="replace", path="/fields/password/value", value="v2")],
    )
    for name in ("polled", "polled-app"):
        await eventually(lambda name=name: kube.secret_data(poll_namespace, name) == {"password": b"v2"})
    for name in ("polled", "polled-app"):
        secret = kube.secret(poll_namespace, name)
        assert secret is not None
        assert secret.metadata.annotations["operator.1password.io/item-version"] == "2"
    status = kube.item(poll_namespace, "polled")["status"]
    assert status["itemVersion"] == 2
