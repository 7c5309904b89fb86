"""No network error of the kubernetes client escapes the Kubernetes layer unconverted.

Every ``KubeApi`` call is made against a port nobody listens on (connection refused) and a
server that drops each connection unanswered (the API server killed mid-request): each raises
a retryable ``KubeError``, never a urllib3 or socket error (a leader election that met one used
to crash the process).
"""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from opsync.core.desired import DesiredSecret, ObjectRef, Owner, SecretState
from opsync.core.errors import KubeError
from opsync.core.mapping import SecretData
from opsync.core.workloads import DEPLOYMENT
from opsync.kube import KubeApi

OWNER = Owner("onepassword.com/v1", "OnePasswordItem", "db", "uid-db")
STATE = SecretState("ns", "db", "Opaque", SecretData({}), resource_version="1", uid="u")
DESIRED = DesiredSecret("ns", "db", "Opaque", SecretData({"k": b"v"}), {}, {}, OWNER)
LEASE = {"metadata": {"name": "l", "namespace": "ns"}, "spec": {}}

CALLS: dict[str, Callable[[KubeApi], Awaitable[Any]]] = {
    "read_secret": lambda kube: kube.read_secret("ns", "db"),
    "create_secret": lambda kube: kube.create_secret(DESIRED),
    "replace_secret": lambda kube: kube.replace_secret(DESIRED, STATE),
    "set_owner_references": lambda kube: kube.set_owner_references(STATE, [OWNER]),
    "retain_secret": lambda kube: kube.retain_secret(STATE, [], "db"),
    "clear_rollout_pending": lambda kube: kube.clear_rollout_pending("ns", "db", "f"),
    "delete_secret": lambda kube: kube.delete_secret("ns", "db", uid="u"),
    "read_lease": lambda kube: kube.read_lease("ns", "l"),
    "create_lease": lambda kube: kube.create_lease("ns", LEASE),
    "replace_lease": lambda kube: kube.replace_lease("ns", LEASE),
    "read_item": lambda kube: kube.read_item("ns", "db"),
    "patch_item_status": lambda kube: kube.patch_item_status("ns", "db", {"conditions": []}),
    "list_deployments": lambda kube: kube.list_deployments("ns"),
    "list_workloads": lambda kube: kube.list_workloads("ns"),
    "patch_workload": lambda kube: kube.patch_workload(DEPLOYMENT, "ns", "app", {"spec": {}}),
    "namespace_annotations": lambda kube: kube.namespace_annotations("ns"),
    "post_event": lambda kube: kube.post_event(
        ObjectRef("v1", "Secret", "ns", "db", "u"), type_="Normal", reason="Synced", message="m"
    ),
}


def test_every_public_call_is_covered() -> None:
    public = {
        name
        for name, member in inspect.getmembers(KubeApi, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert public == set(CALLS)


def _refused() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port  # closed again: connecting is refused


def _dropping() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.recv(65536)
            connection.close()  # no answer at all

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(5)


@pytest.fixture(params=["refused", "dropped"])
def kube(request: pytest.FixtureRequest) -> Iterator[KubeApi]:
    ports = _refused() if request.param == "refused" else _dropping()
    port = next(ports)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 1
    api = KubeApi(client.ApiClient(configuration), concurrency=2)
    try:
        yield api
    finally:
        api.close()
        ports.close()


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_network_error_becomes_a_retryable_kube_error(kube: KubeApi, call: str) -> None:
    with pytest.raises(KubeError) as raised:
        await CALLS[call](kube)
    assert raised.value.retryable and raised.value.status is None
    assert "could not be reached" in str(raised.value)
