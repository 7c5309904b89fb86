"""Item paths and how they resolve from listings: pure, so that the poller can re-check a
resolution against every listing it already has, at no cost.

``vaults/<vault>/items/<item>`` names each part by id or by title. The rules are
the official operator's: a vault title match (case-insensitive) wins over an id;
among several vaults with the same title the oldest ``createdAt`` wins; a
26-character id-like string that matches no title is used as an id. Items: an
id-like string is tried as an id first, then as a title; among several items with
the same title the oldest ``createdAt`` wins. Ties on ``createdAt`` are broken by
id, so the choice is stable from one poll to the next (the official operator's
nondeterminism there causes rollout loops). :mod:`opsync.sync.resolve` asks
Connect for what these functions need.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opsync.connect.models import FullItem, Item, Vault
from opsync.core.errors import Reason, SpecError

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
                reason=Reason.InvalidItemPath,
            )
        return cls(parts[1], parts[3])

    def __str__(self) -> str:
        return f"vaults/{self.vault}/items/{self.item}"


@dataclass(frozen=True)
class Fetched:
    """An item read from Connect with its files (contents by file id), under the ids it
    resolved to."""

    resolved: ItemPath
    item: FullItem
    files: Mapping[str, bytes] = field(repr=False)


def looks_like_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def _oldest(candidates: Sequence[Vault | Item]) -> str:
    chosen = min(candidates, key=lambda c: (c.created_at or _EPOCH, c.id or ""))
    assert chosen.id is not None
    return str(chosen.id)


def pick_vault(ref: str, vaults: Sequence[Vault]) -> str | None:
    """The vault id ``ref`` names among ``vaults``: a title match first, else an id-like ``ref``."""
    matches = [v for v in vaults if v.id and (v.name or "").casefold() == ref.casefold()]
    if matches:
        return _oldest(matches)
    return ref if looks_like_id(ref) else None


def pick_item_by_title(ref: str, items: Sequence[Item]) -> str | None:
    """The item titled ``ref`` among ``items``; Connect's title filter ignores case, so an exact
    match is preferred, as a user would expect; then the oldest."""
    found = [i for i in items if i.id and (i.title or "").casefold() == ref.casefold()]
    matches = [i for i in found if i.title == ref] or found
    return _oldest(matches) if matches else None


def pick(path: ItemPath, vaults: Sequence[Vault], items: Sequence[Item]) -> ItemPath | None:
    """Resolve ``path`` from full listings (no request): the vault list and the items of the
    vault it resolves to. None when it resolves to nothing, or to another vault than listed."""
    vault_id = pick_vault(path.vault, vaults)
    if vault_id is None or any(i.vault and i.vault.id and i.vault.id != vault_id for i in items):
        return None
    if looks_like_id(path.item) and any(i.id == path.item for i in items):
        return ItemPath(vault_id, path.item)
    item_id = pick_item_by_title(path.item, items)
    return ItemPath(vault_id, item_id) if item_id else None
