"""The JSON the API returns: vaults, item summaries, full items, files and the PATCH working document.

Why this module exists: the wire shape is what the official SDKs and operator
parse, so it is written out explicitly, key by key: camelCase everywhere except
``content_path``, RFC 3339 UTC timestamps, empty optional keys left out (as the
Go server's ``omitempty`` does), ``vault.id`` on every item (the Go SDK needs
it), ``trashed: false`` (older servers sent it and the Java SDK expects it).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from opsync.tooling.connectserver import generator
from opsync.tooling.connectserver.models import (
    Item,
    ItemField,
    ItemFile,
    ItemUrl,
    Section,
    Vault,
    format_time,
)


def vault_json(vault: Vault) -> dict[str, Any]:
    out: dict[str, Any] = {"id": vault.id, "name": vault.name}
    if vault.description:
        out["description"] = vault.description
    out |= {
        "attributeVersion": vault.attribute_version,
        "contentVersion": vault.content_version,
        "items": len(vault.items),
        "type": vault.type,
        "createdAt": format_time(vault.created_at),
        "updatedAt": format_time(vault.updated_at),
    }
    return out


def item_summary_json(vault_id: str, item: Item, *, version: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": item.id,
        "title": item.title,
        "vault": {"id": vault_id},
        "category": item.category,
    }
    if item.urls:
        out["urls"] = [url_json(url) for url in item.urls]
    out["favorite"] = item.favorite
    if item.tags:
        out["tags"] = list(item.tags)
    out |= {
        "version": item.version if version is None else version,
        "trashed": False,
        "createdAt": format_time(item.created_at),
        "updatedAt": format_time(item.updated_at),
    }
    if item.last_edited_by:
        out["lastEditedBy"] = item.last_edited_by
    return out


def item_json(vault_id: str, item: Item, *, version: int | None = None) -> dict[str, Any]:
    """The FullItem; ``version`` overrides the reported version (PUT/PATCH report the previous one)."""
    out = item_summary_json(vault_id, item, version=version)
    if item.sections:
        out["sections"] = [section_json(section) for section in item.sections]
    if item.fields:
        now = time.time()
        out["fields"] = [field_json(field, now) for field in item.fields]
    if item.files:
        out["files"] = [file_json(vault_id, item.id, file) for file in item.files]
    return out


def url_json(url: ItemUrl) -> dict[str, Any]:
    out: dict[str, Any] = {"href": url.href}
    if url.label:
        out["label"] = url.label
    if url.primary:
        out["primary"] = True
    return out


def section_json(section: Section) -> dict[str, Any]:
    out: dict[str, Any] = {"id": section.id}
    if section.label:
        out["label"] = section.label
    return out


def field_json(field: ItemField, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {"id": field.id}
    if field.section is not None:
        out["section"] = {"id": field.section.id}
    out["type"] = field.type
    if field.purpose:
        out["purpose"] = field.purpose
    if field.label:
        out["label"] = field.label
    if field.value:
        out["value"] = field.value
    if field.entropy is not None:
        out["entropy"] = field.entropy
    if field.type == "OTP" and field.value:
        code = generator.totp(field.value, now)
        if code is not None:
            out["totp"] = code
    return out


def content_path(vault_id: str, item_id: str, file_id: str) -> str:
    return f"/v1/vaults/{vault_id}/items/{item_id}/files/{file_id}/content"


def file_json(vault_id: str, item_id: str, file: ItemFile, *, inline: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": file.id, "name": file.name, "size": file.size}
    if file.section is not None:
        out["section"] = {"id": file.section.id}
    out["content_path"] = content_path(vault_id, item_id, file.id)
    if inline:
        out["content"] = base64.b64encode(file.content).decode("ascii")
    return out


def patch_document(item: Item) -> dict[str, Any]:
    """The item as JSON Patch operations see it: every patchable key present, fields as a list."""
    return {
        "title": item.title,
        "category": item.category,
        "favorite": item.favorite,
        "tags": list(item.tags),
        "urls": [{"href": url.href, "label": url.label, "primary": url.primary} for url in item.urls],
        "sections": [{"id": section.id, "label": section.label} for section in item.sections],
        "fields": [
            {
                "id": field.id,
                "type": field.type,
                "purpose": field.purpose,
                "label": field.label,
                "value": field.value,
                **({"section": {"id": field.section.id}} if field.section is not None else {}),
            }
            for field in item.fields
        ],
    }
