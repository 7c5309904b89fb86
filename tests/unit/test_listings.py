"""Listings shared by the syncs that run together: one request for many callers, a fresh look
before a title counts as missing, and a fresh resolution when a shared listing led to a gone item."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opsync.connect.models import FullItem, Item, Vault
from opsync.core.errors import NotFound, Reason, ServerError, SpecError
from opsync.core.itempath import ItemPath
from opsync.sync.resolve import Listings, fetch

VAULT_ID = "v" * 26


def _vault(name: str = "Kubernetes") -> Vault:
    return Vault.model_validate({"id": VAULT_ID, "name": name})


def _item(item_id: str, title: str) -> Item:
    return Item.model_validate({"id": item_id, "title": title, "vault": {"id": VAULT_ID}, "version": 1})


class Source:
    """An ItemSource that counts requests and answers from what the test puts in it."""

    def __init__(self) -> None:
        self.vaults = [_vault()]
        self.items = [_item("a" * 26, "db")]
        self.calls: dict[str, int] = {}
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None

    async def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail

    async def list_vaults(self) -> list[Vault]:
        await self._count("vaults")
        return list(self.vaults)

    async def list_items(self, vault_id: str) -> list[Item]:
        await self._count("items")
        return list(self.items)

    async def find_vaults(self, name: str) -> list[Vault]:
        raise AssertionError("shared listings are used instead")

    async def find_items(self, vault_id: str, title: str) -> list[Item]:
        raise AssertionError("shared listings are used instead")

    async def get_item(self, vault_id: str, item_id: str) -> FullItem:
        await self._count("get")
        found = [i for i in self.items if i.id == item_id]
        if not found:
            raise NotFound(f"item {item_id} not found", status=404)
        return FullItem.model_validate({"id": item_id, "title": found[0].title, "vault": {"id": vault_id}})

    async def get_item_with_files(
        self, vault_id: str, item_id: str, *, item: FullItem | None = None
    ) -> tuple[FullItem, dict[str, Any]]:
        return (item or await self.get_item(vault_id, item_id)), {}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


PATH = ItemPath.parse("vaults/Kubernetes/items/db")


async def test_concurrent_look_ups_share_one_request_per_listing() -> None:
    source = Source()
    source.gate = asyncio.Event()
    listings = Listings(source)
    pending = asyncio.gather(*(fetch(source, PATH, listings) for _ in range(20)))
    await asyncio.sleep(0.01)
    source.gate.set()
    fetched = await pending
    assert {got.resolved.item for got in fetched} == {"a" * 26}
    assert source.calls == {"vaults": 1, "items": 1, "get": 20}


async def test_a_listing_is_reused_for_the_ttl_then_asked_again() -> None:
    source, clock = Source(), Clock()
    listings = Listings(source, ttl=2.0, clock=clock)
    assert (await listings.vaults())[1] is True
    clock.now = 1.9
    assert (await listings.vaults())[1] is False
    clock.now = 2.1
    assert (await listings.vaults())[1] is True
    assert source.calls == {"vaults": 2}


async def test_a_title_missing_from_a_shared_listing_is_looked_up_in_a_fresh_one() -> None:
    source = Source()
    listings = Listings(source)
    await fetch(source, PATH, listings)
    source.items.append(_item("b" * 26, "new"))  # created a moment ago

    got = await fetch(source, ItemPath.parse("vaults/Kubernetes/items/new"), listings)

    assert got.resolved.item == "b" * 26
    assert source.calls == {"vaults": 1, "items": 2, "get": 2}


async def test_a_missing_title_is_item_not_found_after_one_fresh_look() -> None:
    source = Source()
    listings = Listings(source)
    await fetch(source, PATH, listings)
    with pytest.raises(SpecError) as raised:
        await fetch(source, ItemPath.parse("vaults/Kubernetes/items/nope"), listings)
    assert raised.value.reason is Reason.ItemNotFound
    assert source.calls["items"] == 2


async def test_an_item_gone_since_the_shared_listing_is_resolved_afresh() -> None:
    source = Source()
    listings = Listings(source)
    await fetch(source, PATH, listings)
    source.items = [_item("c" * 26, "db")]  # deleted and created again under the same title

    got = await fetch(source, PATH, listings)

    assert got.resolved.item == "c" * 26


async def test_a_failed_listing_reaches_every_waiter_and_is_not_kept() -> None:
    source = Source()
    source.gate, source.fail = asyncio.Event(), ServerError("down", status=503)
    listings = Listings(source)
    waiting = asyncio.gather(*(listings.vaults() for _ in range(3)), return_exceptions=True)
    await asyncio.sleep(0.01)
    source.gate.set()
    assert all(isinstance(result, ServerError) for result in await waiting)
    source.fail = None
    assert (await listings.vaults())[1] is True
    assert source.calls == {"vaults": 2}


async def test_the_pollers_listings_replace_what_is_kept() -> None:
    source = Source()
    listings = Listings(source)
    await listings.items(VAULT_ID)
    listings.offer_items(VAULT_ID, [_item("d" * 26, "db")])
    items, fresh = await listings.items(VAULT_ID)
    assert [i.id for i in items] == ["d" * 26] and not fresh
    assert source.calls == {"items": 1}
