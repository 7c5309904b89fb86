"""Turn an ``itemPath`` into vault and item ids with the official operator's rules.

Vaults: a title match (case-insensitive) wins over an id; among several vaults
with the same title the oldest ``createdAt`` wins; a 26-character id-like
string that matches no title is used as an id. Items: an id-like string is
tried as an id first, then as a title; among several items with the same
title the oldest ``createdAt`` wins. Ties on ``createdAt`` are broken by id, so
the choice is stable from one poll to the next (the official operator's
nondeterminism there causes rollout loops).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opsync.connect import ConnectClient, Item, Vault
from opsync.errors import NotFound, SpecError

ID_PATTERN = re.compile(r"^[a-z0-9]{26}$")
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ItemPath:
    """``vaults/<vault>/items/<item>``, each part an id or a title."""

    vault: str
    item: str

    @classmethod
    def parse(cls, path: str) -> ItemPath:
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "vaults" or parts[2] != "items" or not parts[1] or not parts[3]:
            raise SpecError(
                f"itemPath {path!r} is not of the form vaults/<vault id or title>/items/<item id or title>",
                reason="InvalidItemPath",
            )
        return cls(parts[1], parts[3])

    def __str__(self) -> str:
        return f"vaults/{self.vault}/items/{self.item}"


def looks_like_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def _oldest(candidates: Sequence[Vault | Item]) -> str:
    chosen = min(candidates, key=lambda c: (c.created_at or _EPOCH, c.id or ""))
    assert chosen.id is not None
    return str(chosen.id)


async def resolve_vault(client: ConnectClient, vault: str) -> str:
    matches = [v for v in await client.find_vaults(vault) if (v.name or "").casefold() == vault.casefold()]
    if matches:
        return _oldest(matches)
    if looks_like_id(vault):
        return vault
    raise SpecError(
        f"no vault with id or title {vault!r} is visible to the Connect token; check the name "
        "and that the token has access to that vault",
        reason="VaultNotFound",
    )


async def resolve_item(client: ConnectClient, vault_id: str, item: str) -> str:
    if looks_like_id(item):
        try:
            by_id = await client.get_item(vault_id, item)
        except NotFound:
            pass
        else:
            if by_id.id:
                return by_id.id
    # Connect's title filter ignores case: an exact match is preferred, as a user would expect.
    found = [
        i
        for i in await client.find_items(vault_id, item)
        if i.id and (i.title or "").casefold() == item.casefold()
    ]
    matches = [i for i in found if i.title == item] or found
    if matches:
        return _oldest(matches)
    raise SpecError(
        f"no item with id or title {item!r} in vault {vault_id}; check the itemPath",
        reason="ItemNotFound",
    )


async def resolve(client: ConnectClient, path: ItemPath) -> ItemPath:
    """The same path with both parts as ids."""
    vault_id = await resolve_vault(client, path.vault)
    return ItemPath(vault_id, await resolve_item(client, vault_id, path.item))
