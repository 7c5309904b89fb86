"""Fixtures of the node tests: a control plane with a real node, the built image, the chart installed.

Everything else in the suite runs against the no-node ``cluster`` of ``tests/conftest.py``; these
tests need pods to run, so they get a session of their own: :class:`opsync.tooling.node.NodeCluster`
(root: containerd, a kubelet, kube-proxy, the controllers), the operator image built from the
Dockerfile by buildah (:mod:`opsync.tooling.images`) and imported into the node, a local Connect
server listening on the node's address (where pods reach the host), and the Helm chart installed
with that image. Without root (or Go, or the Debian packages and no root to install them) the
tests are skipped with the reason; with ``CI=true`` a missing prerequisite fails them instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from bench.kube import Kube
from opsync.tooling import binaries, hostpkgs, images
from opsync.tooling.harness import ConnectServerProcess
from opsync.tooling.node import NODE_IP, NodeCluster, leftovers
from tests.integration.helpers import CHILDREN, DATA, OTHER_VAULT, VAULT
from tests.node.support import MEASURED, Chart, NodeEnv

NODE_TIMEOUT = 900
"""Seconds the first node test may take: on a fresh machine it installs packages and builds images."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/node/" in str(item.path):
            # `integration` too, so `make unit` (-m 'not integration') leaves them out.
            item.add_marker(pytest.mark.node)
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.timeout(NODE_TIMEOUT))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"node tests cannot run (CI=true: a missing prerequisite is a failure): {reason}")
    pytest.skip(f"node tests need a node: {reason}")


@pytest.fixture(scope="session", autouse=True)
def _close_children() -> Iterator[None]:
    yield
    CHILDREN.close()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeEnv]:
    if os.geteuid() != 0:
        _unavailable("they run containerd and a kubelet, as root (run pytest as root)")
    try:
        hostpkgs.ensure(hostpkgs.NODE, hostpkgs.IMAGE, purpose="the node tests")
        binaries.ensure(binaries.NODE)
    except (hostpkgs.HostPackagesError, binaries.BinariesError) as exc:
        _unavailable(str(exc))
    started = time.monotonic()
    image = images.operator_image()
    image_seconds = time.monotonic() - started
    cluster = NodeCluster(images=[image.archive])
    with cluster:
        state, cgroup = cluster.dir, cluster.cgroup
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        kube = Kube(api)  # the chart installs the CRDs
        directory = tmp_path_factory.mktemp("node-connect")
        connect = ConnectServerProcess.start(
            CHILDREN,
            data_path=directory / "connect-data.yaml",
            data=DATA,
            vaults=[VAULT, OTHER_VAULT],
            log=directory / "connect.log",
            host=NODE_IP,
        )
        try:
            yield NodeEnv(
                cluster=cluster,
                api=api,
                kube=kube,
                image=image,
                connect=connect,
                home=tmp_path_factory.mktemp("helm"),
                timings={"image": image_seconds, **cluster.timings},
            )
        finally:
            connect.stop()
            api.close()
    # Nothing of the node is left: no folder, no cgroup, no bridge, no iptables chain, no mount.
    assert state is not None and not state.exists()
    assert not leftovers(state, cgroup), leftovers(state, cgroup)


@pytest.fixture(scope="session")
def chart(node: NodeEnv) -> Iterator[Chart]:
    """The chart installed in ``opsync-system`` with the built image, one replica, watching every
    namespace, polling Connect every 2 s; returns once its pod is Ready."""
    installed = Chart.install(node, release="opsync", namespace="opsync-system")
    try:
        yield installed
    finally:
        installed.uninstall()


@pytest.fixture
def namespace(node: NodeEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:30].strip("-")
    name = node.kube.create_namespace(f"{stem}-{os.urandom(3).hex()}")
    yield name
    client.CoreV1Api(node.api).delete_namespace(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("node: measured seconds")
        for name, seconds in MEASURED.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f}")
