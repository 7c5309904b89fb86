"""The live state of the local Connect server, and the only code that changes and persists it.

Why this module exists: every change (through the API or through the typed test
API below) must be durable before it is acknowledged, and concurrent requests
must not interleave. One :class:`asyncio.Lock` serialises changes; each change is
staged on copies (stored objects are never modified in place, so readers always
see a consistent state), written to the data file atomically, and only then made
live. If the write fails, nothing changes.

Version arithmetic lives here too: a new item has version 1; every change of an
item adds 1 to its ``version``; every create, change or delete of an item adds 1
to its vault's ``contentVersion`` and moves the vault's ``updatedAt``; renaming a
vault or changing its description adds 1 to ``attributeVersion``.

Test API (all names or ids are accepted where a vault or item is named; changes
are ``async`` because they persist)::

    store.vaults() / store.get_vault("Kubernetes") / store.get_item("Kubernetes", "db")
    await store.create_vault("New"), update_vault(...), delete_vault(...)
    await store.create_item("Kubernetes", {"title": "x", "category": "LOGIN", "fields": [...]})
    await store.update_item("Kubernetes", "db", title=..., fields={"password": "new", "old": None},
                            files={"ca.crt": b"...", "old.txt": None}, tags=[...], urls=[...])
    await store.replace_item(...), delete_item(...)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from opsync.tooling.connectserver import datafile, generator
from opsync.tooling.connectserver.models import (
    ID_RE,
    Item,
    ItemField,
    ItemFile,
    ItemUrl,
    Section,
    ServerIdentity,
    Vault,
    new_id,
    utcnow,
)
from opsync.tooling.connectserver.tokens import generate_signing_key

logger = logging.getLogger(__name__)

ItemChange = Callable[[Vault, Item | None, datetime], Item | None]
"""Given the vault, the stored item (None for a create) and now: the new item content, or None to delete."""


class StoreLookupError(LookupError):
    """No such vault or item, or a name that matches several (the message names it)."""


class VaultNotFound(StoreLookupError):
    pass


class ItemNotFound(StoreLookupError):
    pass


@dataclass(frozen=True)
class Change:
    """The stored item before and after a change (None before a create, None after a delete)."""

    before: Item | None
    after: Item | None


class Store:
    """Vaults, items and files of one server, persisted to its data file on every change."""

    def __init__(self, path: Path, vaults: Sequence[Vault], identity: ServerIdentity) -> None:
        self.path = path
        self.identity = identity
        self._vaults: tuple[Vault, ...] = tuple(vaults)
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Store(path={str(self.path)!r}, vaults={len(self._vaults)})"

    @classmethod
    def open(cls, path: Path) -> Store:
        """Load the data file (missing or empty: no vaults), fill in what it leaves out, write that back.

        Raises :class:`datafile.DataFileError` with file, line and key for an invalid file.
        """
        loaded = datafile.load(path)
        if loaded.state == "missing":
            logger.info("data file %s does not exist: starting with no vaults (it is created now)", path)
        elif loaded.state == "empty":
            logger.info("data file %s is empty: starting with no vaults", path)
        identity = loaded.data.server or ServerIdentity(signing_key=SecretStr(generate_signing_key()))
        vaults = [_normalised(vault, identity) for vault in loaded.data.vaults]
        store = cls(path, vaults, identity)
        text = store._dump(store._vaults)
        try:
            current = path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            current = None
        if text != current:
            datafile.write_atomically(path, text)
            if loaded.state == "loaded":
                logger.info("data file %s: filled in ids, versions and timestamps and wrote it back", path)
        items = sum(len(vault.items) for vault in vaults)
        logger.info("data file %s: %d vaults, %d items", path, len(vaults), items)
        return store

    # ------------------------------------------------------------------------------------------ reading

    def vaults(self) -> list[Vault]:
        """Every vault (live objects: treat them as read-only)."""
        return list(self._vaults)

    def vault_by_id(self, vault_id: str) -> Vault | None:
        for vault in self._vaults:
            if vault.id == vault_id:
                return vault
        return None

    def resolve_vault_id(self, vault: str) -> str:
        """The id of the vault with this id, else of the one vault with this name (exact, then any case)."""
        if self.vault_by_id(vault) is not None:
            return vault
        exact = [candidate for candidate in self._vaults if candidate.name == vault]
        folded = [candidate for candidate in self._vaults if candidate.name.casefold() == vault.casefold()]
        for matches in (exact, folded):
            if len(matches) == 1:
                return matches[0].id
            if len(matches) > 1:
                raise StoreLookupError(f"{len(matches)} vaults are named {vault!r}; use the vault id")
        raise VaultNotFound(f"no vault with id or name {vault!r}")

    def get_vault(self, vault: str) -> Vault:
        """A copy of the vault (by id or name)."""
        found = self.vault_by_id(self.resolve_vault_id(vault))
        assert found is not None
        return found.model_copy(deep=True)

    def get_item(self, vault: str, item: str) -> Item:
        """A copy of the item (by id or title) in the vault (by id or name)."""
        found = self._live_vault(vault)
        return _find_item(found, item).model_copy(deep=True)

    def _live_vault(self, vault: str) -> Vault:
        found = self.vault_by_id(self.resolve_vault_id(vault))
        assert found is not None
        return found

    # --------------------------------------------------------------------------------- changing items

    async def change_item(self, vault_id: str, item_id: str | None, change: ItemChange) -> Change:
        """Apply one item change atomically and durably; the engine of every item write.

        ``item_id`` None creates. ``change`` may raise to refuse (nothing is changed then).
        """
        async with self._lock:
            vault = self.vault_by_id(vault_id)
            if vault is None:
                raise VaultNotFound(f"vault {vault_id} not found")
            before = vault.item(item_id) if item_id is not None else None
            if item_id is not None and before is None:
                raise ItemNotFound(f"item {item_id} not found")
            now = utcnow()
            after = change(vault, before, now)
            items = list(vault.items)
            if after is not None:
                after = self._stamp(after, before, now)
                if before is None:
                    if self._item_id_taken(after.id):
                        after = after.model_copy(update={"id": new_id()})
                    items.append(after)
                else:
                    items[items.index(before)] = after
            elif before is not None:
                items.remove(before)
            staged = vault.model_copy(
                update={"items": items, "content_version": vault.content_version + 1, "updated_at": now}
            )
            await self._commit(
                tuple(staged if candidate is vault else candidate for candidate in self._vaults)
            )
            return Change(before, after)

    def _stamp(self, item: Item, before: Item | None, now: datetime) -> Item:
        if before is None:
            return item.model_copy(
                update={
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "last_edited_by": self.identity.id,
                }
            )
        return item.model_copy(
            update={
                "id": before.id,
                "version": before.version + 1,
                "created_at": before.created_at,
                "updated_at": now,
                "last_edited_by": self.identity.id,
            }
        )

    def _item_id_taken(self, item_id: str) -> bool:
        return any(vault.item(item_id) is not None for vault in self._vaults)

    async def create_item(self, vault: str, item: Mapping[str, Any]) -> Item:
        """Add an item written like a data-file item (``title``, ``category``, ``fields``, ``files``...)."""
        vault_id = self.resolve_vault_id(vault)
        content = _normalised_item(Item.model_validate(dict(item)), self.identity)
        change = await self.change_item(vault_id, None, lambda _vault, _before, _now: content)
        assert change.after is not None
        return change.after.model_copy(deep=True)

    async def replace_item(self, vault: str, item: str, data: Mapping[str, Any]) -> Item:
        """Replace an item's content (id, creation time kept; version + 1), like an edit in the app."""
        vault_id = self.resolve_vault_id(vault)
        item_id = _find_item(self._live_vault(vault_id), item).id
        content = _normalised_item(Item.model_validate({**dict(data), "id": item_id}), self.identity)
        change = await self.change_item(vault_id, item_id, lambda _vault, _before, _now: content)
        assert change.after is not None
        return change.after.model_copy(deep=True)

    async def update_item(
        self,
        vault: str,
        item: str,
        *,
        title: str | None = None,
        category: str | None = None,
        favorite: bool | None = None,
        tags: Sequence[str] | None = None,
        urls: Sequence[Mapping[str, Any]] | None = None,
        fields: Mapping[str, str | None] | None = None,
        files: Mapping[str, bytes | None] | None = None,
    ) -> Item:
        """Change parts of an item as someone editing it in a 1Password app would (version + 1).

        ``fields`` maps a field id or label to its new value; None removes the field; a
        key matching no field adds a new STRING field with that label. A label that
        several fields share must be given by id. ``files`` maps a file name to new
        content (adding the file if absent) or None to remove it.
        """
        vault_id = self.resolve_vault_id(vault)
        item_id = _find_item(self._live_vault(vault_id), item).id

        def edit(_vault: Vault, before: Item | None, _now: datetime) -> Item:
            assert before is not None
            update: dict[str, Any] = {}
            if title is not None:
                update["title"] = title
            if category is not None:
                update["category"] = category.upper()
            if favorite is not None:
                update["favorite"] = favorite
            if tags is not None:
                update["tags"] = list(tags)
            if urls is not None:
                update["urls"] = [ItemUrl.model_validate(dict(url)) for url in urls]
            if fields is not None:
                update["fields"] = _edited_fields(before, fields)
            if files is not None:
                update["files"] = _edited_files(before, files)
            return _normalised_item(Item.model_validate({**before.model_dump(), **update}), self.identity)

        change = await self.change_item(vault_id, item_id, edit)
        assert change.after is not None
        return change.after.model_copy(deep=True)

    async def delete_item(self, vault: str, item: str) -> None:
        vault_id = self.resolve_vault_id(vault)
        item_id = _find_item(self._live_vault(vault_id), item).id
        await self.change_item(vault_id, item_id, lambda _vault, _before, _now: None)

    # -------------------------------------------------------------------------------- changing vaults

    async def create_vault(self, name: str, *, description: str = "", vault_id: str | None = None) -> Vault:
        async with self._lock:
            vault = Vault(id=vault_id or new_id(), name=name, description=description)
            if self.vault_by_id(vault.id) is not None:
                raise ValueError(f"vault id {vault.id} is already taken")
            await self._commit((*self._vaults, vault))
            return vault.model_copy(deep=True)

    async def update_vault(
        self, vault: str, *, name: str | None = None, description: str | None = None
    ) -> Vault:
        """Rename a vault or change its description (``attributeVersion`` + 1)."""
        async with self._lock:
            current = self._live_vault(vault)
            staged = current.model_copy(
                update={
                    "name": current.name if name is None else name,
                    "description": current.description if description is None else description,
                    "attribute_version": current.attribute_version + 1,
                    "updated_at": utcnow(),
                }
            )
            await self._commit(
                tuple(staged if candidate is current else candidate for candidate in self._vaults)
            )
            return staged.model_copy(deep=True)

    async def delete_vault(self, vault: str) -> None:
        async with self._lock:
            current = self._live_vault(vault)
            await self._commit(tuple(candidate for candidate in self._vaults if candidate is not current))

    # ------------------------------------------------------------------------------------ persistence

    def _dump(self, vaults: Sequence[Vault]) -> str:
        return datafile.dump(vaults, self.identity)

    async def _commit(self, vaults: tuple[Vault, ...]) -> None:
        """Write the staged state durably, then make it live. Called with the lock held."""
        text = self._dump(vaults)
        write = asyncio.get_running_loop().run_in_executor(None, datafile.write_atomically, self.path, text)
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # The write goes on in its thread: wait for it, so memory matches the file.
            await asyncio.wait([write])
            if not write.cancelled() and write.exception() is None:
                self._vaults = vaults
            raise
        self._vaults = vaults


def _find_item(vault: Vault, item: str) -> Item:
    if ID_RE.match(item):
        found = vault.item(item)
        if found is not None:
            return found
    matches = [candidate for candidate in vault.items if candidate.title == item]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise StoreLookupError(
            f"{len(matches)} items in vault {vault.name!r} have the title {item!r}; use the id"
        )
    raise ItemNotFound(f"no item with id or title {item!r} in vault {vault.name!r}")


def _edited_fields(item: Item, changes: Mapping[str, str | None]) -> list[dict[str, Any]]:
    fields = [field.model_dump() for field in item.fields]
    for key, value in changes.items():
        matches = [index for index, field in enumerate(item.fields) if field.id == key]
        if not matches:
            matches = [index for index, field in enumerate(item.fields) if field.label == key]
        if len(matches) > 1:
            raise StoreLookupError(f"{len(matches)} fields are labelled {key!r}; give the field id instead")
        if not matches:
            if value is not None:
                fields.append({"label": key, "value": value})
            continue
        if value is None:
            fields[matches[0]] = {}
        else:
            fields[matches[0]] = {**fields[matches[0]], "value": value, "entropy": None}
    return [field for field in fields if field]


def _edited_files(item: Item, changes: Mapping[str, bytes | None]) -> list[dict[str, Any]]:
    files = [file.model_dump(by_alias=True) for file in item.files]
    for name, content in changes.items():
        index = next((i for i, file in enumerate(item.files) if file.name == name or file.id == name), None)
        if index is None:
            if content is not None:
                files.append({"name": name, "content_base64": content})
        elif content is None:
            files[index] = {}
        else:
            files[index] = {**files[index], "content_base64": content}
    return [file for file in files if file]


def _normalised(vault: Vault, identity: ServerIdentity) -> Vault:
    return vault.model_copy(update={"items": [_normalised_item(item, identity) for item in vault.items]})


def _normalised_item(item: Item, identity: ServerIdentity) -> Item:
    """Fill in what a hand-written item leaves out: generated values, sections referenced, entropy."""
    sections = list(item.sections)
    known = {section.id for section in sections}

    def ensure_section(section_id: str) -> None:
        if section_id not in known:
            known.add(section_id)
            sections.append(Section(id=section_id))

    fields: list[ItemField] = []
    for field in item.fields:
        update: dict[str, Any] = {"generate": False, "recipe": None}
        if field.generate and not field.value:
            recipe = field.recipe
            generated = generator.generate(
                recipe.length if recipe else generator.DEFAULT_LENGTH,
                recipe.character_sets if recipe else None,
                recipe.exclude_characters if recipe else "",
            )
            update |= {"value": generated.value, "entropy": generated.entropy}
        elif field.entropy is None and field.purpose == "PASSWORD" and field.value:
            update["entropy"] = generator.estimate_entropy(field.value)
        if field.section is not None:
            ensure_section(field.section.id)
        fields.append(field.model_copy(update=update))
    files: list[ItemFile] = list(item.files)
    for file in files:
        if file.section is not None:
            ensure_section(file.section.id)
    return item.model_copy(
        update={
            "fields": fields,
            "sections": sections,
            "last_edited_by": item.last_edited_by or identity.id,
        }
    )
