"""Fixtures for operator tests: a real Connect server process and real operator processes.

The operator runs as ``opsync run`` in a subprocess against the session's
control plane and a ``opsync connect-server`` subprocess, exactly as a user
runs them (both started by :mod:`opsync.tooling.harness`, through
:mod:`tests.integration.helpers`); its log goes to a file the tests can read
(the canary test does). Each operator watches a namespace glob, so several can
run side by side with different flags without acting on each other's objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess
from tests.conftest import Cluster
from tests.integration.helpers import (
    CHILDREN,
    connect_config,
    start_connect,
    start_operator,
    watched_namespace,
)


@pytest.fixture(scope="session", autouse=True)
def _close_children() -> Iterator[None]:
    """At the session's end, stop what is still running and end the watchdog."""
    yield
    CHILDREN.close()


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(tmp_path_factory.mktemp("connect"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    crds_installed: None,
    connect_server: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = start_operator(
        cluster, connect_server, tmp_path_factory.mktemp("operator"), namespace_prefix="op-"
    )
    yield process
    process.stop()


@pytest.fixture
def op_namespace(api_client: client.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    """A namespace watched by the session's operator."""
    with watched_namespace(api_client, operator) as name:
        yield name


@pytest.fixture
async def connect(connect_server: ConnectServerProcess) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(connect_config(connect_server)) as api:
        yield api


@pytest.fixture
def kube(api_client: client.ApiClient) -> Kube:
    return Kube(api_client)
