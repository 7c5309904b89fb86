"""Turn an ``itemPath`` into vault and item ids by asking Connect, and read the item.

The rules are those of :mod:`opsync.core.itempath` (pure); this module asks
Connect only what they need. Syncs that run together (a cold start syncs
every item at once) share :class:`Listings`: one vault listing, and at most one
item listing per vault, however many of them look a title up, instead of one
filtered search per sync. A title that a shared listing does not show is
looked up again in a fresh listing before it counts as missing, so an item
created a moment ago is found.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from opsync.connect.models import FullItem, Item, Vault
from opsync.core.errors import NotFound, Reason, SpecError
from opsync.core.itempath import Fetched, ItemPath, looks_like_id, pick_item_by_title, pick_vault
from opsync.sync.ports import ItemSource

_T = TypeVar("_T")

LISTING_TTL = 2.0
"""Seconds a shared listing answers title look-ups before it is asked for again."""


class _Shared(Generic[_T]):
    """One listing: concurrent callers wait for one request, whose answer is kept ``ttl`` seconds."""

    def __init__(self, request: Callable[[], Awaitable[_T]], ttl: float, clock: Callable[[], float]) -> None:
        self._request = request
        self._ttl = ttl
        self._clock = clock
        self._kept: tuple[float, _T] | None = None
        self._pending: asyncio.Future[_T] | None = None

    async def get(self, *, fresh: bool) -> tuple[_T, bool]:
        if not fresh and self._kept is not None and self._clock() - self._kept[0] < self._ttl:
            return self._kept[1], False
        if self._pending is not None:
            return await asyncio.shield(self._pending), True
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._pending = future
        try:
            value = await self._request()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: with no other waiter it is not "never retrieved"
            raise
        finally:
            self._pending = None
        self._keep(value)
        future.set_result(value)
        return value, True

    def offer(self, value: _T) -> None:
        """A listing made elsewhere (the poller's): newer than what is kept, so it replaces it."""
        self._keep(value)

    def _keep(self, value: _T) -> None:
        kept = self._kept = (self._clock(), value)
        # Dropped once stale: a large vault's listing is not held between cold start and polls.
        asyncio.get_running_loop().call_later(self._ttl, self._expire, kept)

    def _expire(self, kept: tuple[float, _T]) -> None:
        if self._kept is kept:
            self._kept = None


class Listings:
    """Vault and item listings shared by the syncs that run together.

    Concurrent callers of the same listing wait for one request; its answer is
    reused for ``ttl`` seconds. Each call says whether its answer was fetched for
    it (``fresh``), so that a miss in a reused listing can be checked again.
    """

    def __init__(
        self, source: ItemSource, *, ttl: float = LISTING_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        self._vaults: _Shared[Sequence[Vault]] = _Shared(source.list_vaults, ttl, clock)
        self._items: dict[str, _Shared[Sequence[Item]]] = {}

    def _shared_items(self, vault_id: str) -> _Shared[Sequence[Item]]:
        shared = self._items.get(vault_id)
        if shared is None:
            shared = self._items[vault_id] = _Shared(
                lambda: self._source.list_items(vault_id), self._ttl, self._clock
            )
        return shared

    async def vaults(self, *, fresh: bool = False) -> tuple[Sequence[Vault], bool]:
        """Every vault the token sees, and whether this call fetched them."""
        return await self._vaults.get(fresh=fresh)

    async def items(self, vault_id: str, *, fresh: bool = False) -> tuple[Sequence[Item], bool]:
        """Every item of a vault (overviews), and whether this call fetched them."""
        return await self._shared_items(vault_id).get(fresh=fresh)

    def offer_vaults(self, vaults: Sequence[Vault]) -> None:
        """The poller listed the vaults: later look-ups start from that listing."""
        self._vaults.offer(vaults)

    def offer_items(self, vault_id: str, items: Sequence[Item]) -> None:
        """The poller listed a vault's items: later look-ups start from that listing."""
        self._shared_items(vault_id).offer(items)


@dataclass(frozen=True, kw_only=True)
class Channel:
    """One Connect server (and token) as the use cases read it: the client and the listings its
    syncs share. The operator's own connection is one; each OnePasswordConnection in use another."""

    connect: ItemSource
    listings: Listings

    @classmethod
    def of(cls, connect: ItemSource) -> Channel:
        return cls(connect=connect, listings=Listings(connect))


async def resolve_vault(
    client: ItemSource, vault: str, listings: Listings | None = None, *, fresh: bool = False
) -> str:
    if listings is None:
        found = pick_vault(vault, await client.find_vaults(vault))
    else:
        vaults, fresh = await listings.vaults(fresh=fresh)
        found = pick_vault(vault, vaults)
        if found is None and not fresh:
            found = pick_vault(vault, (await listings.vaults(fresh=True))[0])
    if found is not None:
        return found
    raise SpecError(
        f"no vault with id or title {vault!r} is visible to the Connect token; check the name "
        "and that the token has access to that vault",
        reason=Reason.VaultNotFound,
    )


async def resolve_item(
    client: ItemSource, vault_id: str, item: str, listings: Listings | None = None, *, fresh: bool = False
) -> tuple[str, FullItem | None]:
    """The item's id, and the full item when it was fetched on the way (by id)."""
    if looks_like_id(item):
        try:
            by_id = await client.get_item(vault_id, item)
        except NotFound:
            pass
        else:
            if by_id.id:
                return by_id.id, by_id
    if listings is None:
        found = pick_item_by_title(item, await client.find_items(vault_id, item))
    else:
        items, fresh = await listings.items(vault_id, fresh=fresh)
        found = pick_item_by_title(item, items)
        if found is None and not fresh:
            found = pick_item_by_title(item, (await listings.items(vault_id, fresh=True))[0])
    if found is not None:
        return found, None
    raise SpecError(
        f"no item with id or title {item!r} in vault {vault_id}; check the itemPath",
        reason=Reason.ItemNotFound,
    )


async def resolve(
    client: ItemSource, path: ItemPath, listings: Listings | None = None, *, fresh: bool = False
) -> tuple[ItemPath, FullItem | None]:
    """The same path with both parts as ids, and the full item if resolving fetched it
    (``fresh``: from listings fetched for this call, not shared ones)."""
    vault_id = await resolve_vault(client, path.vault, listings, fresh=fresh)
    item_id, item = await resolve_item(client, vault_id, path.item, listings, fresh=fresh)
    return ItemPath(vault_id, item_id), item


async def fetch_resolved(client: ItemSource, resolved: ItemPath, *, item: FullItem | None = None) -> Fetched:
    """Read a resolved item and its files (``item``: already read, so not asked for again)."""
    full, files = await client.get_item_with_files(resolved.vault, resolved.item, item=item)
    return Fetched(
        resolved, full, {file_id: content.get_secret_value() for file_id, content in files.items()}
    )


async def fetch(client: ItemSource, path: ItemPath, listings: Listings | None = None) -> Fetched:
    """Resolve ``path`` and read the item and its files (by id: no second GET of the item)."""
    resolved, item = await resolve(client, path, listings)
    try:
        return await fetch_resolved(client, resolved, item=item)
    except NotFound:
        if listings is None or item is not None:
            raise
    # The shared listing may have shown an item deleted or renamed since: look again.
    resolved, item = await resolve(client, path, listings, fresh=True)
    return await fetch_resolved(client, resolved, item=item)
