"""Fixtures shared by the whole suite: a clean environment, the real control plane, per-test namespaces.

No test sees the operator or Connect settings of the shell that runs pytest
(``OP_CONNECT_*``, ``WATCH_NAMESPACE``, ``OPSYNC_*`` ...): :func:`clean_env`
removes them for every test. One control plane (etcd + kube-apiserver) serves
the whole session; every test that touches Kubernetes gets a namespace of its
own. With ``--existing-cluster`` (or ``OPSYNC_TEST_EXISTING_CLUSTER=1``) the
suite runs against the cluster of ``$KUBECONFIG`` instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from bench.kube import Kube
from opsync.tooling.controlplane import ControlPlane
from opsync.tooling.harness import is_operator_setting

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


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's operator and Connect settings removed from the environment, for every test
    (the tooling's OPSYNC_CACHE_DIR / OPSYNC_BIN_DIR and KUBECONFIG stay)."""
    for name in list(os.environ):
        if is_operator_setting(name):
            monkeypatch.delenv(name)


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
    Kube(api_client).install_crds(sorted((REPO / "crds").glob("*.yaml")))


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own (deletion never finishes without a controller-manager)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
