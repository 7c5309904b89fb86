"""A cold start: what opsync asks of Connect and leaves on the objects it handles.

The items, their OnePasswordItems and an annotated Deployment exist before the operator
starts, as when opsync is installed on a cluster that already has them. This module runs a
Connect server of its own, so that its request counter sees this operator's requests only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.core import desired
from opsync.handlers.lifecycle import kopf_connections
from opsync.kube import CONCURRENCY
from opsync.tooling.harness import ConnectServerProcess, request_delta
from tests.conftest import Cluster
from tests.integration.helpers import (
    ITEM_NAME,
    ITEM_PATH,
    VAULT,
    connect_config,
    deployment,
    eventually,
    exact_operator,
    make_namespace,
    new_item,
    running_operator,
    secret_ready,
    start_connect,
)

PREFIX = "ocs-"
BY_TITLE = 6
BY_ID = 4
READ = ("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}")
VAULTS = ("GET", "/v1/vaults")
LISTING = ("GET", "/v1/vaults/{vaultUuid}/items")


@pytest.fixture(scope="module")
def own_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(Path(tmp_path_factory.mktemp("cold-start-connect")))
    try:
        yield server
    finally:
        server.stop()


async def test_a_cold_start_lists_each_vault_once_and_leaves_only_the_finalizer(
    cluster: Cluster,
    crds_installed: None,
    api_client: client.ApiClient,
    kube: Kube,
    own_connect: ConnectServerProcess,
    tmp_path: Path,
) -> None:
    async with ConnectClient(connect_config(own_connect)) as connect:
        items = [
            await new_item(connect, title=f"cold-{n}", password=f"p{n}") for n in range(BY_TITLE + BY_ID)
        ]
    namespace = make_namespace(api_client, PREFIX)
    for n, item in enumerate(items):
        reference = item.title if n < BY_TITLE else item.id
        kube.create_item(namespace, f"cold-{n}", f"vaults/{VAULT}/items/{reference}")
    app = kube.apps.create_namespaced_deployment(
        namespace,
        deployment(
            "app", annotations={ITEM_PATH: f"vaults/{VAULT}/items/{items[0].id}", ITEM_NAME: "app-secret"}
        ),
    )
    before = own_connect.requests()

    with running_operator(cluster, own_connect, tmp_path, namespace_prefix=PREFIX):
        for n in range(len(items)):
            await eventually(lambda n=n: secret_ready(kube, namespace, f"cold-{n}"), within=60)
        await eventually(lambda: kube.secret(namespace, "app-secret"), within=60)
        spent = request_delta(before, own_connect.requests())

        # One read per item, and the look-ups by title share the listings: not one vault search
        # and one item search per item (which was 1 + 1 per item by title + 1 per item).
        assert spent[READ] == len(items) + 1  # the Deployment's item too
        assert spent.get(VAULTS, 0) <= 2 and spent.get(LISTING, 0) <= 2, spent
        assert sum(spent.values()) <= len(items) + 1 + 4, spent

        # Nothing of kopf's bookkeeping on the objects: the finalizer, and no annotation.
        for n in range(len(items)):
            meta = kube.item(namespace, f"cold-{n}")["metadata"]
            assert meta["finalizers"] == [desired.FINALIZER]
            assert not [key for key in meta.get("annotations") or {} if key.startswith("opsync.io/")], meta
        live = kube.apps.read_namespaced_deployment("app", namespace).metadata
        assert live.generation == app.metadata.generation == 1
        assert not [key for key in live.annotations or {} if key.startswith("opsync.io/")], live.annotations
    client.CoreV1Api(api_client).delete_namespace(namespace)


def connections_to(pid: int, port: int) -> int:
    """The established TCP connections of process ``pid`` to ``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def test_a_cold_start_keeps_kopfs_connections_within_their_bound(
    cluster: Cluster,
    crds_installed: None,
    api_client: client.ApiClient,
    kube: Kube,
    own_connect: ConnectServerProcess,
    tmp_path: Path,
) -> None:
    """kopf's stock session opens a connection per concurrent request, each holding a 256 KiB
    TLS buffer: a cold start of many items left dozens open. Watching one namespace, kopf may
    hold its 3 watch streams and 16 more; the kubernetes client's pool adds its own."""
    async with ConnectClient(connect_config(own_connect)) as connect:
        item = await new_item(connect, title="many", password="p")
    namespace = make_namespace(api_client, "ocn-")
    items = {f"many-{n}": f"vaults/{VAULT}/items/{item.id}" for n in range(150)}
    kube.create_items(namespace, items)
    operator = exact_operator(cluster.kubeconfig, own_connect, tmp_path / "operator.log", namespace)
    try:
        await eventually(lambda: kube.readiness(namespace)[0] == len(items), within=120)
        server = urlparse(api_client.configuration.host)
        opened = connections_to(operator.pid, server.port or 443)
        assert 0 < opened <= kopf_connections([namespace]) + CONCURRENCY, opened
    finally:
        operator.stop()
    client.CoreV1Api(api_client).delete_namespace(namespace)
