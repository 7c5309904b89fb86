"""Turn an ``itemPath`` into vault and item ids by asking Connect, and read the item.

The rules are those of :mod:`opsync.core.itempath` (pure); this module asks
Connect only what they need.
"""

from __future__ import annotations

from opsync.connect.models import FullItem
from opsync.core.errors import NotFound, Reason, SpecError
from opsync.core.itempath import Fetched, ItemPath, looks_like_id, pick_item_by_title, pick_vault
from opsync.sync.ports import ItemSource


async def resolve_vault(client: ItemSource, vault: str) -> str:
    found = pick_vault(vault, await client.find_vaults(vault))
    if found is not None:
        return found
    raise SpecError(
        f"no vault with id or title {vault!r} is visible to the Connect token; check the name "
        "and that the token has access to that vault",
        reason=Reason.VaultNotFound,
    )


async def resolve_item(client: ItemSource, vault_id: str, item: str) -> tuple[str, FullItem | None]:
    """The item's id, and the full item when it was fetched on the way (by id)."""
    if looks_like_id(item):
        try:
            by_id = await client.get_item(vault_id, item)
        except NotFound:
            pass
        else:
            if by_id.id:
                return by_id.id, by_id
    found = pick_item_by_title(item, await client.find_items(vault_id, item))
    if found is not None:
        return found, None
    raise SpecError(
        f"no item with id or title {item!r} in vault {vault_id}; check the itemPath",
        reason=Reason.ItemNotFound,
    )


async def resolve(client: ItemSource, path: ItemPath) -> tuple[ItemPath, FullItem | None]:
    """The same path with both parts as ids, and the full item if resolving fetched it."""
    vault_id = await resolve_vault(client, path.vault)
    item_id, item = await resolve_item(client, vault_id, path.item)
    return ItemPath(vault_id, item_id), item


async def fetch_resolved(client: ItemSource, resolved: ItemPath, *, item: FullItem | None = None) -> Fetched:
    """Read a resolved item and its files (``item``: already read, so not asked for again)."""
    full, files = await client.get_item_with_files(resolved.vault, resolved.item, item=item)
    return Fetched(
        resolved, full, {file_id: content.get_secret_value() for file_id, content in files.items()}
    )


async def fetch(client: ItemSource, path: ItemPath) -> Fetched:
    """Resolve ``path`` and read the item and its files (by id: no second GET of the item)."""
    resolved, item = await resolve(client, path)
    return await fetch_resolved(client, resolved, item=item)
