"""Error mapping and the retry policy against the local Connect server's real answers and injected faults.

Faults are made deterministic with ``budget`` (exactly N faults, then healthy answers) or a
rate of 1.0 (every request fails); attempts are counted with ``server.request_count``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.connect.models import Field, FullItem, ItemCategory, PatchOperation
from opsync.core.errors import (
    BadRequest,
    ConnectError,
    ConnectTransientError,
    ConnectUnavailable,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
)
from opsync.tooling.connectserver import ConnectServer
from tests.connect.ids import oid

VAULT = oid("retryvault")
ITEM = oid("retryitem")
FILE = oid("retryfile")
MISSING = oid("missing")

DATA = {
    "vaults": [
        {
            "id": VAULT,
            "name": "Retry",
            "items": [
                {
                    "id": ITEM,
                    "title": "item",
                    "category": "LOGIN",
                    "fields": [{"id": "password", "purpose": "PASSWORD", "value": "pw"}],
                    "files": [{"id": FILE, "name": "f.txt", "content": b"file"}],
                }
            ],
        }
    ]
}

GET_ITEM = "GET /v1/vaults/{vaultUuid}/items/{itemUuid}"
CREATE = "POST /v1/vaults/{vaultUuid}/items"
MAX_RETRIES = 3


@pytest.fixture
async def server(connect_server_factory: Callable[..., Any]) -> ConnectServer:
    result: ConnectServer = await connect_server_factory(DATA)
    result.faults.retry_after_seconds = 0
    return result


@pytest.fixture
async def client_for(server: ConnectServer) -> AsyncIterator[Callable[..., ConnectClient]]:
    clients: list[ConnectClient] = []

    def make(**settings: Any) -> ConnectClient:
        options = {
            "max_retries": MAX_RETRIES,
            "forbidden_retries": 2,
            "backoff_initial": 0.001,
            "backoff_max": 0.004,
            "timeout": 5.0,
        } | settings
        config = ConnectConfig(host=server.url, token=server.issue_token([VAULT]), **options)
        client = ConnectClient(config)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(client_for: Callable[..., ConnectClient]) -> ConnectClient:
    return client_for()


def new_item(title: str = "new") -> FullItem:
    return FullItem(
        title=title, category=ItemCategory.PASSWORD, fields=[Field(id="password", value=SecretStr("n"))]
    )


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (up to 10 s) until the server has finished what it was doing."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# -- statuses the server really answers ------------------------------------------------------------


async def test_bad_requests_are_not_retried(client: ConnectClient, server: ConnectServer) -> None:
    with pytest.raises(BadRequest) as caught:
        await client.get_item(VAULT, "not-an-id")
    assert caught.value.status == 400
    assert caught.value.endpoint == "GET /v1/vaults/{vault}/items/{item}"
    assert "Invalid Item UUID" in str(caught.value)
    with pytest.raises(BadRequest, match="Invalid filter"):
        await client.list_items(VAULT, filter="title eq")
    with pytest.raises(BadRequest, match="Invalid item category"):
        await client.create_item(VAULT, FullItem(title="x", category="NO_SUCH_CATEGORY"))
    with pytest.raises(BadRequest):
        await client.patch_item(VAULT, ITEM, [PatchOperation(op="move", path="/title", value="x")])
    assert server.request_count(status=400) == 4


async def test_not_found_is_not_retried(client: ConnectClient, server: ConnectServer) -> None:
    with pytest.raises(NotFound) as caught:
        await client.get_item(VAULT, MISSING)
    assert caught.value.status == 404
    assert f"item {MISSING} not found" in str(caught.value)
    with pytest.raises(NotFound):
        await client.get_file_content(VAULT, ITEM, MISSING)
    with pytest.raises(NotFound):
        await client.replace_item(VAULT, MISSING, new_item())
    assert server.request_count(status=404) == 3


async def test_vault_gone_from_a_valid_scope_is_not_found(
    client: ConnectClient, server: ConnectServer
) -> None:
    await server.store.delete_vault(VAULT)
    with pytest.raises(NotFound, match=r"vault \w+ not found"):
        await client.get_vault(VAULT)


async def test_errors_are_in_the_tree(client: ConnectClient) -> None:
    with pytest.raises(ConnectError) as caught:
        await client.get_item(VAULT, MISSING)
    assert not caught.value.retryable


# -- 5xx -------------------------------------------------------------------------------------------


async def test_server_errors_are_retried_until_success(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.error_rate = 1.0
    server.faults.budget = MAX_RETRIES
    item = await client.get_item(VAULT, ITEM)
    assert item.id == ITEM
    assert server.request_count(GET_ITEM, status=500) == MAX_RETRIES
    assert server.request_count(GET_ITEM, status=200) == 1


async def test_server_errors_give_up_after_the_bound(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.error_rate = 1.0
    with pytest.raises(ServerError) as caught:
        await client.get_item(VAULT, ITEM)
    assert caught.value.status == 500
    assert caught.value.retryable
    assert "Something went wrong" in str(caught.value)
    assert f"gave up after {MAX_RETRIES + 1} attempts" in str(caught.value)
    assert server.request_count(GET_ITEM) == MAX_RETRIES + 1


async def test_every_idempotent_method_is_retried(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.error_rate = 1.0
    server.faults.budget = 1
    await client.replace_item(VAULT, ITEM, await client.get_item(VAULT, ITEM))
    server.faults.budget = 1
    await client.patch_item(VAULT, ITEM, [PatchOperation.replace("/title", "patched")])
    server.faults.budget = 1
    await client.get_file_content(VAULT, ITEM, FILE)
    server.faults.budget = 1
    await client.delete_item(VAULT, ITEM)
    assert server.request_count(status=500) == 4


async def test_no_retries_when_max_retries_is_zero(
    client_for: Callable[..., ConnectClient], server: ConnectServer
) -> None:
    client = client_for(max_retries=0)
    server.faults.error_rate = 1.0
    with pytest.raises(ServerError) as caught:
        await client.list_vaults()
    assert "gave up" not in str(caught.value)
    assert server.request_count("GET /v1/vaults") == 1


# -- 429 -------------------------------------------------------------------------------------------


async def test_rate_limits_are_retried_until_success(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.rate_limit_rate = 1.0
    server.faults.budget = 2
    assert [v.id for v in await client.list_vaults()] == [VAULT]
    assert server.request_count("GET /v1/vaults", status=429) == 2


async def test_rate_limits_give_up_after_the_bound(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.rate_limit_rate = 1.0
    with pytest.raises(RateLimited) as caught:
        await client.get_item(VAULT, ITEM)
    assert caught.value.status == 429
    assert caught.value.retry_after == 0
    assert server.request_count(GET_ITEM, status=429) == MAX_RETRIES + 1


async def test_a_retry_after_longer_than_allowed_ends_the_retries(
    client_for: Callable[..., ConnectClient], server: ConnectServer
) -> None:
    client = client_for(retry_after_max=0.5)
    server.faults.rate_limit_rate = 1.0
    server.faults.retry_after_seconds = 30
    with pytest.raises(RateLimited) as caught:
        await client.get_item(VAULT, ITEM)
    assert caught.value.retry_after == 30  # for the caller to schedule the next try
    assert server.request_count(GET_ITEM) == 1


# -- dropped connections and timeouts --------------------------------------------------------------


async def test_dropped_connections_are_retried_until_success(
    client: ConnectClient, server: ConnectServer
) -> None:
    server.faults.drop_rate = 1.0
    server.faults.budget = 2
    assert (await client.get_item(VAULT, ITEM)).id == ITEM
    assert server.request_count(GET_ITEM, status="dropped") == 2  # type: ignore[arg-type]


async def test_dropped_connections_give_up_as_unavailable(
    client: ConnectClient, server: ConnectServer
) -> None:
    server.faults.drop_rate = 1.0
    with pytest.raises(ConnectUnavailable) as caught:
        await client.get_item(VAULT, ITEM)
    assert caught.value.status is None
    assert caught.value.retryable
    assert caught.value.endpoint == "GET /v1/vaults/{vault}/items/{item}"
    assert server.request_count(GET_ITEM) == MAX_RETRIES + 1


async def test_latency_above_the_timeout_is_unavailable(
    client_for: Callable[..., ConnectClient], server: ConnectServer
) -> None:
    client = client_for(timeout=0.05, max_retries=1)
    server.faults.latency_seconds = 0.3
    with pytest.raises(ConnectUnavailable, match="timed out") as caught:
        await client.get_item(VAULT, ITEM)
    assert isinstance(caught.value, ConnectTransientError)
    await eventually(lambda: server.request_count(GET_ITEM) == 2)
    server.faults.latency_seconds = 0.0
    assert (await client.get_item(VAULT, ITEM)).id == ITEM


async def test_unreachable_server_is_unavailable(
    client_for: Callable[..., ConnectClient], server: ConnectServer
) -> None:
    client = client_for(max_retries=1)
    await server.stop()
    with pytest.raises(ConnectUnavailable, match="could not be reached"):
        await client.list_vaults()


# -- the transient 403 -----------------------------------------------------------------------------


async def test_transient_403_is_retried_until_success(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.transient_403_rate = 1.0
    server.faults.budget = 2
    assert (await client.get_item(VAULT, ITEM)).id == ITEM
    assert server.request_count(GET_ITEM, status=403) == 2


async def test_transient_403_gives_up_after_its_own_bound(
    client: ConnectClient, server: ConnectServer
) -> None:
    server.faults.transient_403_rate = 1.0
    with pytest.raises(Forbidden) as caught:
        await client.get_item(VAULT, ITEM)
    assert caught.value.status == 403
    assert server.request_count(GET_ITEM) == 1 + 2  # forbidden_retries=2, below max_retries


# -- POST (create) is not retried blindly ----------------------------------------------------------


async def test_create_is_not_retried_after_a_server_error(
    client: ConnectClient, server: ConnectServer
) -> None:
    server.faults.error_rate = 1.0
    server.faults.budget = 1
    with pytest.raises(ServerError):
        await client.create_item(VAULT, new_item())
    assert server.request_count(CREATE) == 1


async def test_create_is_not_retried_after_a_dropped_connection(
    client: ConnectClient, server: ConnectServer
) -> None:
    server.faults.drop_rate = 1.0
    server.faults.budget = 1
    with pytest.raises(ConnectUnavailable):
        await client.create_item(VAULT, new_item())
    assert server.request_count(CREATE) == 1


async def test_create_is_not_retried_after_a_timeout(
    client_for: Callable[..., ConnectClient], server: ConnectServer
) -> None:
    client = client_for(timeout=0.05)
    server.faults.latency_seconds = 0.3
    with pytest.raises(ConnectUnavailable, match="timed out"):
        await client.create_item(VAULT, new_item("slow create"))
    await eventually(lambda: server.request_count(CREATE) == 1)
    server.faults.latency_seconds = 0.0
    # The request reached the server, which may or may not have acted on it: one attempt only,
    # so at most one item, never a duplicate.
    assert len(await client.find_items(VAULT, "slow create")) <= 1
    assert server.request_count(CREATE) == 1


async def test_create_is_retried_when_the_server_refused_it(
    client: ConnectClient, server: ConnectServer
) -> None:
    server.faults.rate_limit_rate = 1.0
    server.faults.budget = 1
    await client.create_item(VAULT, new_item("after 429"))
    server.faults.rate_limit_rate = 0.0
    server.faults.transient_403_rate = 1.0
    server.faults.budget = 1
    await client.create_item(VAULT, new_item("after 403"))
    assert server.request_count(CREATE, status=429) == 1
    assert server.request_count(CREATE, status=403) == 1
    assert server.request_count(CREATE, status=200) == 2
    assert len(await client.find_items(VAULT, "after 429")) == 1
    assert len(await client.find_items(VAULT, "after 403")) == 1


# -- health endpoints stay reliable ----------------------------------------------------------------


async def test_health_endpoints_are_outside_the_faults(client: ConnectClient, server: ConnectServer) -> None:
    server.faults.error_rate = 1.0
    await client.heartbeat()
    assert (await client.health()).name
    assert await client.metrics()
