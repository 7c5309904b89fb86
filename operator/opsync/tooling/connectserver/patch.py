"""PATCH bodies: the RFC 6902 subset Connect supports, with fields addressed by id.

Why this module exists: Connect's PATCH takes ``add``, ``remove`` and ``replace``
only, and its pointers address fields by *id* (``/fields/password/value``), not
by array index. Each operation is rewritten here into a plain index pointer
against the item's working document (see :func:`serialize.patch_document`) and
applied with :mod:`jsonpatch`; the result goes through the same validation as a
PUT body. Rules:

* ``/`` (add or replace) replaces the whole item, like PUT;
* ``/title``, ``/favorite``, ``/category``, ``/tags``, ``/tags/1``, ``/tags/-``,
  ``/urls...``, ``/sections...`` behave as plain JSON Patch;
* ``add /fields`` with an object appends a field (with a list, replaces them all);
* ``/fields/{id}`` and ``/fields/{id}/{attribute}`` find the field by id, else by
  its label when exactly one field has it, else by a numeric index;
  ``add /fields/{id}`` on an existing field replaces it, on an unknown id appends
  a new field with that id;
* read-only attributes (``/id``, ``/vault``, ``/version``, ``/files``, timestamps)
  cannot be patched.

Messages name operations by position and path, never by value.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import jsonpatch
import jsonpointer
from pydantic import BaseModel, ConfigDict, ValidationError

PATCHABLE = frozenset({"title", "category", "favorite", "tags", "urls", "sections", "fields"})
READ_ONLY = frozenset(
    {"id", "vault", "version", "createdAt", "updatedAt", "lastEditedBy", "files", "state", "trashed"}
)


class InvalidPatch(ValueError):
    """The patch is not acceptable (400); the message is safe to return."""


class PatchOperation(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")

    op: Literal["add", "remove", "replace"]
    path: str
    value: Any = None

    def __repr__(self) -> str:
        return f"PatchOperation(op={self.op!r}, path={self.path!r})"


def parse_operations(document: Any) -> list[PatchOperation]:
    if not isinstance(document, list):
        raise InvalidPatch("Invalid patch: the body must be a JSON array of operations")
    operations = []
    for position, raw in enumerate(document):
        if not isinstance(raw, dict):
            raise InvalidPatch(f"Invalid patch: operation {position} is not an object")
        try:
            operation = PatchOperation.model_validate(raw)
        except ValidationError as exc:
            problems = exc.errors(include_input=False, include_url=False, include_context=False)
            fields = ", ".join(str(problem["loc"][0]) for problem in problems if problem["loc"])
            raise InvalidPatch(
                f"Invalid patch: operation {position} has an invalid {fields or 'shape'}"
                " (op must be add, remove or replace; path is required)"
            ) from None
        if operation.op != "remove" and "value" not in operation.model_fields_set:
            raise InvalidPatch(f"Invalid patch: operation {position} ({operation.op}) needs a value")
        operations.append(operation)
    return operations


def apply(document: dict[str, Any], operations: list[PatchOperation]) -> dict[str, Any]:
    """Apply the operations in order to a working document (not modified) and return the result."""
    result = copy.deepcopy(document)
    for position, operation in enumerate(operations):
        result = _apply_one(result, operation, position)
    return result


def _apply_one(document: dict[str, Any], operation: PatchOperation, position: int) -> dict[str, Any]:
    where = f"operation {position} ({operation.op} {operation.path})"
    if operation.path in ("", "/"):
        if operation.op == "remove":
            raise InvalidPatch(f"Invalid patch: {where}: the item itself cannot be removed")
        if not isinstance(operation.value, dict):
            raise InvalidPatch(f"Invalid patch: {where}: the value must be an item object")
        return copy.deepcopy(operation.value)
    if not operation.path.startswith("/"):
        raise InvalidPatch(f"Invalid patch: {where}: the path must start with '/'")
    parts = [part.replace("~1", "/").replace("~0", "~") for part in operation.path[1:].split("/")]
    head = parts[0]
    if head in READ_ONLY:
        raise InvalidPatch(f"Invalid patch: {where}: /{head} is read-only")
    if head not in PATCHABLE:
        raise InvalidPatch(f"Invalid patch: {where}: items have no attribute /{head}")
    op: str = operation.op
    value = copy.deepcopy(operation.value)
    if head == "fields":
        op, parts, value = _address_field(document, op, parts, value, where)
    path = jsonpointer.JsonPointer.from_parts(parts).path
    step: dict[str, Any] = {"op": op, "path": path}
    if op != "remove":
        step["value"] = value
    try:
        patched = jsonpatch.apply_patch(document, [step])
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        raise InvalidPatch(f"Invalid patch: {where}: the path does not exist in the item") from None
    if not isinstance(patched, dict):
        raise InvalidPatch(f"Invalid patch: {where}: the result is not an item")
    return patched


def _address_field(
    document: dict[str, Any], op: str, parts: list[str], value: Any, where: str
) -> tuple[str, list[str], Any]:
    fields = document.get("fields")
    if not isinstance(fields, list):
        fields = document["fields"] = []
    if len(parts) == 1:
        if op == "add" and isinstance(value, dict):
            return "add", ["fields", "-"], value
        return op, parts, value
    key = parts[1]
    if key == "-" and len(parts) == 2:
        return op, ["fields", "-"], value
    index = _find_field(fields, key)
    if index is None:
        if op == "add" and len(parts) == 2 and isinstance(value, dict):
            return "add", ["fields", "-"], {**value, "id": value.get("id") or key}
        raise InvalidPatch(f"Invalid patch: {where}: the item has no field {key!r}")
    if len(parts) == 2 and op in ("add", "replace") and isinstance(value, dict) and not key.isdigit():
        field_id = fields[index].get("id") if isinstance(fields[index], dict) else None
        return "replace", ["fields", str(index)], {**value, "id": value.get("id") or field_id}
    return op, ["fields", str(index), *parts[2:]], value


def _find_field(fields: list[Any], key: str) -> int | None:
    for index, field in enumerate(fields):
        if isinstance(field, dict) and field.get("id") == key:
            return index
    labelled = [
        index for index, field in enumerate(fields) if isinstance(field, dict) and field.get("label") == key
    ]
    if len(labelled) == 1:
        return labelled[0]
    if key.isdigit() and int(key) < len(fields):
        return int(key)
    return None
