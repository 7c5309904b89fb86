"""Token scopes as the client sees them: which vaults a token reaches, and at which level."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.connect.models import Field, FullItem, ItemCategory, PatchOperation
from opsync.core.errors import ConnectRequestError, Forbidden, Unauthorized
from opsync.tooling.connectserver import ConnectServer, ServerOptions
from tests.connect.ids import oid

TEAM = oid("teamvault")
OPS = oid("opsvault")
TEAM_ITEM = oid("teamitem")
OPS_ITEM = oid("opsitem")

DATA = {
    "vaults": [
        {
            "id": TEAM,
            "name": "Team",
            "items": [
                {
                    "id": TEAM_ITEM,
                    "title": "team-login",
                    "category": "LOGIN",
                    "fields": [{"id": "password", "value": "x"}],
                }
            ],
        },
        {
            "id": OPS,
            "name": "Ops",
            "items": [
                {
                    "id": OPS_ITEM,
                    "title": "ops-login",
                    "category": "LOGIN",
                    "fields": [{"id": "password", "value": "y"}],
                }
            ],
        },
    ]
}

ITEM_ROUTE = "/v1/vaults/{vaultUuid}/items/{itemUuid}"


@pytest.fixture
async def server(connect_server_factory: Callable[..., Any]) -> ConnectServer:
    result: ConnectServer = await connect_server_factory(DATA)
    return result


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., ConnectClient]]:
    clients: list[ConnectClient] = []

    def make(server: ConnectServer, token: str, **settings: Any) -> ConnectClient:
        options = {"backoff_initial": 0.001, "backoff_max": 0.002} | settings
        client = ConnectClient(ConnectConfig(host=server.url, token=token, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def new_item() -> FullItem:
    return FullItem(
        title="new", category=ItemCategory.PASSWORD, fields=[Field(id="password", value=SecretStr("n"))]
    )


async def test_token_for_one_vault_cannot_see_or_read_the_other(
    server: ConnectServer, client_for: Callable[..., ConnectClient]
) -> None:
    client = client_for(server, server.issue_token([TEAM]))
    assert [v.id for v in await client.list_vaults()] == [TEAM]
    assert await client.find_vaults("Ops") == []
    assert (await client.get_item(TEAM, TEAM_ITEM)).id == TEAM_ITEM
    for call in (
        lambda: client.get_vault(OPS),
        lambda: client.list_items(OPS),
        lambda: client.find_items(OPS, "ops-login"),
        lambda: client.get_item(OPS, OPS_ITEM),
        lambda: client.list_files(OPS, OPS_ITEM),
        lambda: client.get_item_with_files(OPS, OPS_ITEM),
    ):
        with pytest.raises(Forbidden) as caught:
            await call()
        assert caught.value.status == 403
        assert "does not have access" in str(caught.value)


async def test_forbidden_is_retried_only_a_bounded_number_of_times(
    server: ConnectServer, client_for: Callable[..., ConnectClient]
) -> None:
    # Connect's transient 403 cannot be told from a real one: retry a few times, then give up.
    client = client_for(server, server.issue_token([TEAM]), max_retries=5, forbidden_retries=2)
    with pytest.raises(Forbidden) as caught:
        await client.get_item(OPS, OPS_ITEM)
    assert server.request_count(f"GET {ITEM_ROUTE}", status=403) == 3
    assert "gave up after 3 attempts" in str(caught.value)
    client = client_for(server, server.issue_token([TEAM]), forbidden_retries=0)
    with pytest.raises(Forbidden):
        await client.get_item(OPS, OPS_ITEM)
    assert server.request_count(f"GET {ITEM_ROUTE}", status=403) == 4


async def test_read_only_token_cannot_write(
    server: ConnectServer, client_for: Callable[..., ConnectClient]
) -> None:
    # Connect 1.x answers these writes 401 "token does not have write access"; the token is valid,
    # it only lacks the permission, so the client raises Forbidden (with the real status), unretried.
    client = client_for(server, server.issue_token([f"{TEAM},r"]))
    item = await client.get_item(TEAM, TEAM_ITEM)
    writes = (
        lambda: client.create_item(TEAM, new_item()),
        lambda: client.replace_item(TEAM, TEAM_ITEM, item),
        lambda: client.patch_item(TEAM, TEAM_ITEM, [PatchOperation.replace("/title", "changed")]),
        lambda: client.delete_item(TEAM, TEAM_ITEM),
    )
    for write in writes:
        with pytest.raises(Forbidden) as caught:
            await write()
        assert caught.value.status == 401
        assert "write access" in str(caught.value)
    assert server.request_count(status=401) == 4  # none retried
    assert (await client.get_item(TEAM, TEAM_ITEM)).version == 1


async def test_read_only_token_cannot_write_on_a_server_answering_403(
    connect_server_factory: Callable[..., Any], client_for: Callable[..., ConnectClient]
) -> None:
    server = await connect_server_factory(DATA, options=ServerOptions(read_only_write_status=403))
    client = client_for(server, server.issue_token([f"{TEAM},r"]), forbidden_retries=0)
    with pytest.raises(Forbidden) as caught:
        await client.delete_item(TEAM, TEAM_ITEM)
    assert caught.value.status == 403
    with pytest.raises(Forbidden):
        await client.create_item(TEAM, new_item())


async def test_write_only_token_cannot_read(
    server: ConnectServer, client_for: Callable[..., ConnectClient]
) -> None:
    client = client_for(server, server.issue_token([f"{TEAM},w"]), forbidden_retries=0)
    with pytest.raises(Forbidden):
        await client.get_item(TEAM, TEAM_ITEM)
    with pytest.raises(Forbidden):
        await client.list_items(TEAM)
    created = await client.create_item(TEAM, new_item())
    assert created.id


async def test_mixed_scopes(server: ConnectServer, client_for: Callable[..., ConnectClient]) -> None:
    client = client_for(server, server.issue_token([TEAM, f"{OPS},r"]))
    assert sorted(v.id for v in await client.list_vaults()) == sorted([TEAM, OPS])
    await client.patch_item(TEAM, TEAM_ITEM, [PatchOperation.replace("/title", "renamed")])
    assert (await client.get_item(OPS, OPS_ITEM)).title == "ops-login"
    with pytest.raises(Forbidden):
        await client.patch_item(OPS, OPS_ITEM, [PatchOperation.replace("/title", "renamed")])


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c", ""])
async def test_bad_token_is_unauthorized_and_not_retried(
    server: ConnectServer, client_for: Callable[..., ConnectClient], token: str
) -> None:
    if not token:
        token = server.issue_token([TEAM], expires_in=0)  # expired at once
    client = client_for(server, token)
    with pytest.raises(Unauthorized) as caught:
        await client.list_vaults()
    assert caught.value.status == 401
    assert isinstance(caught.value, ConnectRequestError) and not caught.value.retryable
    assert server.request_count("GET /v1/vaults") == 1


async def test_token_of_another_server_is_unauthorized(
    server: ConnectServer,
    connect_server_factory: Callable[..., Any],
    client_for: Callable[..., ConnectClient],
) -> None:
    other = await connect_server_factory(DATA)
    client = client_for(server, other.issue_token([TEAM]))
    with pytest.raises(Unauthorized):
        await client.get_item(TEAM, TEAM_ITEM)
