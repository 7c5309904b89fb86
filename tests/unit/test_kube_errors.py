"""No network error of the kubernetes client escapes the Kubernetes layer unconverted.

Every ``KubeApi`` call is made against a port nobody listens on (connection refused) and a
server that drops each connection unanswered (the API server killed mid-request): each raises
a retryable ``KubeError``, never a urllib3 or socket error (a leader election that met one used
to crash the process).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from kubernetes import client

from opsync.core.errors import KubeError
from opsync.kube import KubeApi
from tests.unit.kube_calls import CALLS, public_methods


def test_every_public_call_is_covered() -> None:
    assert public_methods() == set(CALLS)


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
