"""ConnectClient's ``observer`` hook against the local Connect server over loopback HTTP.

One call per attempt (retries included), with the route template (never an id), the status as a
string (``"error"`` without a response) and the seconds taken; a failing observer never fails a
request; :meth:`opsync.ops.metrics.Metrics.connect_request` fits the hook as it is.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core.errors import ConnectUnavailable, NotFound, ServerError
from opsync.ops.metrics import Metrics
from opsync.tooling.connectserver import ConnectServer
from tests.connect.conftest import DB_ITEM_ID, KUBERNETES_VAULT_ID, PLATFORM_VAULT_ID
from tests.connect.ids import oid

Call = tuple[str, str, str, float]

GET_ITEM = "/v1/vaults/{vault}/items/{item}"
MISSING = oid("missingitem")


@pytest.fixture
async def client_for(
    connect_server: ConnectServer, connect_token: str
) -> AsyncIterator[Callable[..., ConnectClient]]:
    clients: list[ConnectClient] = []

    def make(observer: Callable[[str, str, str, float], None], **settings: Any) -> ConnectClient:
        options: dict[str, Any] = {
            "host": connect_server.url,
            "token": connect_token,
            "max_retries": 3,
            "backoff_initial": 0.001,
            "backoff_max": 0.004,
            "timeout": 5.0,
        } | settings
        client = ConnectClient(ConnectConfig(**options), observer=observer)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_templates_and_statuses_per_request(client_for: Callable[..., ConnectClient]) -> None:
    calls: list[Call] = []
    client = client_for(lambda *call: calls.append(call))

    await client.list_vaults()
    await client.get_vault(KUBERNETES_VAULT_ID)
    await client.get_item(KUBERNETES_VAULT_ID, DB_ITEM_ID)
    with pytest.raises(NotFound):
        await client.get_item(PLATFORM_VAULT_ID, MISSING)

    assert [call[:3] for call in calls] == [
        ("GET", "/v1/vaults", "200"),
        ("GET", "/v1/vaults/{vault}", "200"),
        ("GET", GET_ITEM, "200"),
        ("GET", GET_ITEM, "404"),
    ]
    assert all(isinstance(call[3], float) and 0 <= call[3] < 5 for call in calls)
    for _, template, _, _ in calls:
        for identifier in (KUBERNETES_VAULT_ID, PLATFORM_VAULT_ID, DB_ITEM_ID, MISSING):
            assert identifier not in template


async def test_files_are_observed_with_their_template(client_for: Callable[..., ConnectClient]) -> None:
    calls: list[Call] = []
    client = client_for(lambda *call: calls.append(call))

    _, files = await client.get_item_with_files(KUBERNETES_VAULT_ID, DB_ITEM_ID)

    content = "/v1/vaults/{vault}/items/{item}/files/{file}/content"
    assert [call[1] for call in calls].count(content) == len(files) == 2
    assert {call[2] for call in calls} == {"200"}


async def test_every_retry_is_one_call(
    client_for: Callable[..., ConnectClient], connect_server: ConnectServer
) -> None:
    calls: list[Call] = []
    client = client_for(lambda *call: calls.append(call))
    connect_server.faults.error_rate = 1.0
    connect_server.faults.budget = 2

    await client.get_item(KUBERNETES_VAULT_ID, DB_ITEM_ID)

    assert [call[:3] for call in calls] == [
        ("GET", GET_ITEM, "500"),
        ("GET", GET_ITEM, "500"),
        ("GET", GET_ITEM, "200"),
    ]


async def test_a_request_that_gives_up_is_observed_each_time(
    client_for: Callable[..., ConnectClient], connect_server: ConnectServer
) -> None:
    calls: list[Call] = []
    client = client_for(lambda *call: calls.append(call), max_retries=1)
    connect_server.faults.error_rate = 1.0

    with pytest.raises(ServerError):
        await client.list_vaults()

    assert [call[2] for call in calls] == ["500", "500"]


async def test_a_refused_connection_is_an_error() -> None:
    calls: list[Call] = []
    config = ConnectConfig(host=f"http://127.0.0.1:{closed_port()}", token="token", max_retries=0)

    async with ConnectClient(config, observer=lambda *call: calls.append(call)) as client:
        with pytest.raises(ConnectUnavailable):
            await client.get_item(KUBERNETES_VAULT_ID, DB_ITEM_ID)

    assert len(calls) == 1
    method, template, status, seconds = calls[0]
    assert (method, template, status) == ("GET", GET_ITEM, "error")
    assert 0 <= seconds < 5


async def test_a_failing_observer_does_not_fail_the_request(
    client_for: Callable[..., ConnectClient], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(method: str, endpoint: str, status: str, seconds: float) -> None:
        raise RuntimeError("observer is broken")

    client = client_for(broken)
    with caplog.at_level(logging.DEBUG, logger="opsync.connect.client"):
        item = await client.get_item(KUBERNETES_VAULT_ID, DB_ITEM_ID)
        with pytest.raises(NotFound):
            await client.get_item(KUBERNETES_VAULT_ID, MISSING)

    assert item.id == DB_ITEM_ID
    ignored = [record for record in caplog.records if "observer raised RuntimeError" in record.getMessage()]
    assert len(ignored) == 2
    assert all(record.levelno == logging.DEBUG for record in ignored)


async def test_metrics_count_the_client_requests(client_for: Callable[..., ConnectClient]) -> None:
    metrics = Metrics(process_metrics=False)
    client = client_for(metrics.connect_request)

    await client.get_item(KUBERNETES_VAULT_ID, DB_ITEM_ID)
    await client.get_item(KUBERNETES_VAULT_ID, DB_ITEM_ID)
    with pytest.raises(NotFound):
        await client.get_item(KUBERNETES_VAULT_ID, MISSING)

    labels = {"method": "GET", "endpoint": GET_ITEM}
    assert metrics.value("opsync_connect_requests_total", **labels, status="200") == 2
    assert metrics.value("opsync_connect_requests_total", **labels, status="404") == 1
    assert metrics.value("opsync_connect_request_duration_seconds_count", **labels) == 3
    body, _ = metrics.render()
    assert DB_ITEM_ID.encode() not in body
    assert KUBERNETES_VAULT_ID.encode() not in body
