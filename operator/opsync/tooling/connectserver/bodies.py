"""Item bodies sent to the API (create, replace, patch results) and how they become stored items.

Why this module exists: official clients send bodies full of harmless junk that
must be accepted (``"id": ""`` on new items and fields, ``"type": ""``,
zero timestamps, ``null`` values, ``"trashed": false``, lower-case field types),
while real mistakes must be refused with a 400 that says what is wrong. The
lenient request models here take the junk; :func:`build_item` applies Connect's
rules (categories, built-in field ids, sections, generated values, DATE and
MONTH_YEAR formats) and returns the content of a stored item. The store stamps
id, version and timestamps. Error messages name fields by position and id,
never by value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opsync.tooling.connectserver import generator
from opsync.tooling.connectserver.models import (
    APP_ONLY_CATEGORIES,
    CATEGORIES,
    CHARACTER_SETS,
    FIELD_TYPES,
    PURPOSES,
    Item,
    ItemField,
    ItemUrl,
    Section,
    SectionRef,
    new_id,
    new_section_id,
)

BUILT_IN_IDS: Mapping[str, str] = MappingProxyType(
    {"USERNAME": "username", "PASSWORD": "password", "NOTES": "notesPlain"}
)
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_MONTH_YEAR = re.compile(r"^\d{4}/?(0[1-9]|1[0-2])$")


class InvalidItem(ValueError):
    """The body is not an acceptable item (400); the message is safe to return."""


class BodyModel(BaseModel):
    """Lenient request model: unknown keys ignored, ``null`` accepted, input never echoed."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")


class BodyRef(BodyModel):
    id: str | None = None


class BodySection(BodyModel):
    id: str | None = None
    label: str | None = None


class BodyRecipe(BodyModel):
    length: int | None = None
    character_sets: list[str] | None = Field(None, alias="characterSets")
    exclude_characters: str | None = Field(None, alias="excludeCharacters")


class BodyField(BodyModel):
    id: str | None = None
    type: str | None = None
    purpose: str | None = None
    label: str | None = None
    value: str | None = Field(None, repr=False)
    section: BodyRef | None = None
    generate: bool | None = None
    recipe: BodyRecipe | None = None


class BodyUrl(BodyModel):
    href: str
    label: str | None = None
    primary: bool | None = None


class ItemBody(BodyModel):
    """A FullItem as clients send it; read-only keys (version, timestamps, files, ...) are ignored."""

    id: str | None = None
    title: str | None = None
    vault: BodyRef | None = None
    category: str | None = None
    favorite: bool | None = None
    tags: list[str] | None = None
    urls: list[BodyUrl] | None = None
    sections: list[BodySection] | None = None
    fields: list[BodyField] | None = None


def parse_body(document: Any) -> ItemBody:
    """Validate a decoded JSON body as an item, or raise :class:`InvalidItem`."""
    if not isinstance(document, dict):
        raise InvalidItem("Validation: the body must be a JSON object (an item)")
    try:
        return ItemBody.model_validate(document)
    except ValidationError as exc:
        raise InvalidItem(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    details = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False)[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        details.append(f"{where}: {error['msg']}")
    return "Validation: " + "; ".join(details)


def build_item(
    body: ItemBody,
    *,
    vault_id: str,
    item_id: str | None,
    existing: Item | None,
    now: datetime,
) -> Item:
    """The item this body describes, ready for the store (which stamps id, version and times).

    ``existing`` is the stored item for a replace or patch (its files and creation
    time are kept), None for a create. ``item_id`` is the id in the path, if any.

    On a create the path decides: the body's ``id`` and ``vault.id`` are ignored, as
    Connect does. The Go SDK does not rewrite the vault, so copying an item into
    another vault (``CreateItem(GetItem(x, "Dev"), "Prod")``) sends the source
    vault's id. On a replace or patch (``item_id`` given) an ``id`` or ``vault.id``
    that differs from the path is refused, as the behaviour notes recommend.
    """
    if item_id is not None:
        if body.vault is not None and body.vault.id and body.vault.id != vault_id:
            raise InvalidItem("Validation: the item's vault.id does not match the vault in the path")
        if body.id and body.id != item_id:
            raise InvalidItem("Validation: the item's id does not match the item in the path")
    category = _category(body.category, existing)
    sections = _sections(body.sections or [])
    fields = _fields(body.fields or [], sections, existing)
    if existing is None:
        fields = _with_built_ins(fields)
    _require_unique_ids(fields)
    return Item(
        id=existing.id if existing is not None else new_id(),
        title=body.title or "",
        category=category,
        favorite=bool(body.favorite),
        tags=list(dict.fromkeys(body.tags or [])),
        urls=[
            ItemUrl(href=url.href, label=url.label or "", primary=bool(url.primary))
            for url in body.urls or []
        ],
        sections=sections,
        fields=fields,
        files=list(existing.files) if existing is not None else [],
        created_at=existing.created_at if existing is not None else now,
        updated_at=now,
    )


def _category(requested: str | None, existing: Item | None) -> str:
    category = (requested or "").upper()
    if category not in CATEGORIES:
        raise InvalidItem("Invalid item category")
    if category in APP_ONLY_CATEGORIES and (existing is None or existing.category != category):
        raise InvalidItem("Invalid item category")
    return category


def _sections(requested: Sequence[BodySection]) -> list[Section]:
    sections: list[Section] = []
    for section in requested:
        if any(known.id == section.id for known in sections if section.id):
            raise InvalidItem(f"Validation: duplicate section id {section.id!r}")
        sections.append(Section(id=section.id or new_section_id(), label=section.label or ""))
    return sections


def _fields(
    requested: Sequence[BodyField], sections: list[Section], existing: Item | None
) -> list[ItemField]:
    fields: list[ItemField] = []
    taken = {field.id for field in requested if field.id}
    for position, field in enumerate(requested):
        purpose = (field.purpose or "").upper()
        if purpose not in PURPOSES:
            raise InvalidItem(f"Validation: fields[{position}]: unknown field purpose")
        kind = (field.type or ("CONCEALED" if purpose == "PASSWORD" else "STRING")).upper()
        if kind == "TOTP":
            kind = "OTP"
        if kind not in FIELD_TYPES:
            raise InvalidItem(f"Validation: fields[{position}]: unknown field type")
        field_id = field.id
        if not field_id:
            built_in = BUILT_IN_IDS.get(purpose)
            field_id = built_in if built_in and built_in not in taken else new_id()
            taken.add(field_id)
        label = field.label or ""
        if not label and purpose:
            label = BUILT_IN_IDS[purpose] if purpose == "NOTES" else purpose.lower()
        value = field.value or ""
        entropy: float | None = None
        if field.generate:
            generated = _generate(field.recipe, position)
            value, entropy = generated.value, generated.entropy
        else:
            previous = existing.field(field_id) if existing is not None else None
            if previous is not None and previous.id == field_id and previous.value == value:
                entropy = previous.entropy
            elif purpose == "PASSWORD" and value:
                entropy = generator.estimate_entropy(value)
        if value and kind == "DATE" and not _DATE.match(value):
            raise InvalidItem(f"Validation: fields[{position}] ({field_id}): a DATE value must be YYYY-MM-DD")
        if value and kind == "MONTH_YEAR" and not _MONTH_YEAR.match(value):
            raise InvalidItem(
                f"Validation: fields[{position}] ({field_id}): a MONTH_YEAR value must be YYYYMM or YYYY/MM"
            )
        section: SectionRef | None = None
        if field.section is not None and field.section.id:
            section = SectionRef(id=field.section.id)
            if not any(known.id == section.id for known in sections):
                sections.append(Section(id=section.id))
        fields.append(
            ItemField(
                id=field_id,
                type=kind,
                purpose=purpose,
                label=label,
                value=value,
                section=section,
                entropy=entropy,
            )
        )
    return fields


def _generate(recipe: BodyRecipe | None, position: int) -> generator.Generated:
    recipe = recipe or BodyRecipe()
    sets = [name.upper() for name in recipe.character_sets or []]
    if any(name not in CHARACTER_SETS for name in sets):
        raise InvalidItem(f"Validation: fields[{position}]: unknown character set in recipe")
    try:
        return generator.generate(
            recipe.length if recipe.length is not None else generator.DEFAULT_LENGTH,
            sets,
            recipe.exclude_characters or "",
        )
    except generator.RecipeError as exc:
        raise InvalidItem(f"Validation: fields[{position}]: {exc}") from None


def _with_built_ins(fields: list[ItemField]) -> list[ItemField]:
    """New items get the ``notesPlain`` field every 1Password item has, when the body has none."""
    if any(field.id == "notesPlain" or field.purpose == "NOTES" for field in fields):
        return fields
    return [*fields, ItemField(id="notesPlain", type="STRING", purpose="NOTES", label="notesPlain")]


def _require_unique_ids(fields: Sequence[ItemField]) -> None:
    seen: set[str] = set()
    for field in fields:
        if field.id in seen:
            raise InvalidItem(f"Validation: duplicate field id {field.id!r}")
        seen.add(field.id)
