"""Listings shared by the syncs that run together: one request for many callers, a fresh look
before a title counts as missing, and a fresh resolution when a shared listing led to a gone item.

Against the in-process local Connect server over loopback, with the real client; requests are
counted by the server itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opsync.core.errors import Reason, ServerError, SpecError
from opsync.core.itempath import ItemPath
from opsync.sync.resolve import Listings, fetch
from tests.unit.fakes import LocalConnect

DATA = {
    "vaults": [
        {
            "name": "Kubernetes",
            "items": [
                {"title": "db", "category": "LOGIN", "fields": [{"label": "password", "value": "one"}]}
            ],
        }
    ]
}
DB = ItemPath.parse("vaults/Kubernetes/items/db")
VAULTS, LISTING, READ = (
    "GET /v1/vaults",
    "GET /v1/vaults/{vaultUuid}/items",
    "GET /v1/vaults/{vaultUuid}/items/{itemUuid}",
)


@pytest.fixture
async def connect(tmp_path: Path) -> AsyncIterator[LocalConnect]:
    async with LocalConnect(DATA, tmp_path) as local:
        yield local


def spent(connect: LocalConnect) -> tuple[int, int, int]:
    return connect.requests(VAULTS), connect.requests(LISTING), connect.requests(READ)


async def test_concurrent_look_ups_share_one_request_per_listing(connect: LocalConnect) -> None:
    listings = Listings(connect.client)
    fetched = await asyncio.gather(*(fetch(connect.client, DB, listings) for _ in range(20)))
    assert len({got.resolved.item for got in fetched}) == 1
    assert spent(connect) == (1, 1, 20)


async def test_without_shared_listings_every_look_up_asks(connect: LocalConnect) -> None:
    """The cost the listings save: a vault search and an item search per look-up."""
    await asyncio.gather(*(fetch(connect.client, DB) for _ in range(5)))
    assert spent(connect) == (5, 5, 5)


async def test_a_listing_is_reused_for_the_ttl_then_asked_again(connect: LocalConnect) -> None:
    now = [0.0]
    listings = Listings(connect.client, ttl=2.0, clock=lambda: now[0])
    assert (await listings.vaults())[1] is True
    now[0] = 1.9
    assert (await listings.vaults())[1] is False
    now[0] = 2.1
    assert (await listings.vaults())[1] is True
    assert connect.requests(VAULTS) == 2


async def test_a_title_missing_from_a_shared_listing_is_looked_up_in_a_fresh_one(
    connect: LocalConnect,
) -> None:
    listings = Listings(connect.client)
    await fetch(connect.client, DB, listings)
    await connect.server.store.create_item(
        "Kubernetes", {"title": "new", "category": "LOGIN"}
    )  # a moment ago

    got = await fetch(connect.client, ItemPath.parse("vaults/Kubernetes/items/new"), listings)

    assert got.item.title == "new"
    assert spent(connect) == (1, 2, 2)


async def test_a_missing_title_is_item_not_found_after_one_fresh_look(connect: LocalConnect) -> None:
    listings = Listings(connect.client)
    await fetch(connect.client, DB, listings)
    with pytest.raises(SpecError) as raised:
        await fetch(connect.client, ItemPath.parse("vaults/Kubernetes/items/nope"), listings)
    assert raised.value.reason is Reason.ItemNotFound
    assert connect.requests(LISTING) == 2


async def test_an_item_gone_since_the_shared_listing_is_resolved_afresh(connect: LocalConnect) -> None:
    listings = Listings(connect.client)
    first = await fetch(connect.client, DB, listings)
    await connect.server.store.delete_item("Kubernetes", "db")
    await connect.server.store.create_item("Kubernetes", {"title": "db", "category": "LOGIN"})

    got = await fetch(connect.client, DB, listings)

    assert got.resolved.item != first.resolved.item and got.item.title == "db"


async def test_a_failed_listing_reaches_every_waiter_and_is_not_kept(connect: LocalConnect) -> None:
    listings = Listings(connect.client)
    connect.server.faults.error_rate, connect.server.faults.budget = 1.0, 1
    results = await asyncio.gather(*(listings.vaults() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, ServerError) for result in results)
    assert (await listings.vaults())[1] is True  # asked again, not the failure kept
    assert connect.requests(VAULTS) == 2


async def test_the_pollers_listings_replace_what_is_kept(connect: LocalConnect) -> None:
    listings = Listings(connect.client)
    (vault,) = (await listings.vaults())[0]
    assert vault.id is not None
    await listings.items(vault.id)
    await connect.server.store.create_item("Kubernetes", {"title": "later", "category": "LOGIN"})
    listings.offer_items(vault.id, await connect.client.list_items(vault.id))  # the poller's listing

    items, fresh = await listings.items(vault.id)

    assert {item.title for item in items} == {"db", "later"} and not fresh
    assert connect.requests(LISTING) == 2  # the first look-up and the poller's; none after
