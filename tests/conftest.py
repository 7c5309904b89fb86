"""Fixtures shared by the whole suite: the real control plane and per-test namespaces.

One control plane (etcd + kube-apiserver) serves the whole session; every test
that touches Kubernetes gets a namespace of its own. With ``--existing-cluster``
(or ``OPSYNC_TEST_EXISTING_CLUSTER=1``) the suite runs against the cluster of
``$KUBECONFIG`` instead.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from opsync.tooling.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--existing-cluster",
        action="store_true",
        default=os.environ.get("OPSYNC_TEST_EXISTING_CLUSTER") == "1",
        help="run integration tests against $KUBECONFIG instead of a local control plane",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    plane: ControlPlane | None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.config.getoption("--existing-cluster"):
        yield Cluster(Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config")), None)
        return
    with ControlPlane() as plane:
        yield Cluster(plane.kubeconfig, plane)


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def crds_installed(api_client: client.ApiClient) -> None:
    """Apply every CRD in crds/ and wait until the API server serves it."""
    ext = client.ApiextensionsV1Api(api_client)
    bodies = [
        body
        for path in sorted((REPO / "crds").glob("*.yaml"))
        for body in yaml.safe_load_all(path.read_text())
    ]
    for body in bodies:
        name = body["metadata"]["name"]
        try:
            existing = ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = existing.metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(body)
        deadline = time.monotonic() + 60
        while True:
            crd = ext.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, f"CRD {name} not Established: {conditions}"
            time.sleep(0.1)


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own (deletion never finishes without a controller-manager)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
