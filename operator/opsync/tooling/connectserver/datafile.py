"""Reading and writing the YAML data file: line-accurate errors in, atomic durable writes out.

Why this module exists: the data file is written by hand, so a mistake must be
reported with the line and the key it is on (``data.yaml:14: vaults[0].items[1].category:
unknown item category ...``); and the server rewrites the file on every change, so a
write must never leave a torn file behind (temporary file in the same folder,
``fsync``, ``rename``, ``fsync`` of the folder). Error messages are built from
positions and pydantic's descriptions only: the offending value (possibly a
secret) and YAML's source snippets are never quoted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import ValidationError

from opsync.tooling.connectserver import serialize
from opsync.tooling.connectserver.models import (
    DataFile,
    Item,
    ItemField,
    ItemFile,
    ServerIdentity,
    Vault,
    format_time,
)

HEADER = (
    "# opsync connect-server data file. The server rewrites it on every change\n"
    "# (ids, versions and timestamps are filled in); see docs/connect-server.md.\n"
)
MAX_REPORTED_ERRORS = 5

Location = tuple[str | int, ...]


class DataFileError(Exception):
    """The data file cannot be used; the message names the file, the line and the key."""


@dataclass(frozen=True)
class Loaded:
    data: DataFile
    raw: Any
    """The document as parsed, before validation (None for a missing or empty file)."""
    state: Literal["missing", "empty", "loaded"]


def load(path: Path) -> Loaded:
    """Parse and validate the data file; a missing or empty file is an empty server."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Loaded(DataFile(), None, "missing")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read the data file: {type(exc).__name__}") from None
    raw, lines = _parse(path, text)
    if raw is None:
        return Loaded(DataFile(), None, "empty")
    if not isinstance(raw, dict):
        raise DataFileError(f"{path}:1: the data file must be a mapping with a 'vaults' list")
    try:
        data = DataFile.model_validate(raw)
    except ValidationError as exc:
        raise DataFileError(_describe(path, exc, lines)) from None
    return Loaded(data, raw, "loaded")


def _parse(path: Path, text: str) -> tuple[Any, dict[Location, int]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Location, int] = {}
        _collect_lines(path, node, (), lines)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1"
        problem = exc.problem or exc.context or "invalid YAML"
        raise DataFileError(f"{path}:{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise DataFileError(f"{path}: invalid YAML: {type(exc).__name__}") from None
    finally:
        loader.dispose()


def _collect_lines(path: Path, node: yaml.Node, location: Location, lines: dict[Location, int]) -> None:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            if key in seen:
                raise DataFileError(
                    f"{path}:{key_node.start_mark.line + 1}: {_format((*location, key))}: duplicate key"
                )
            seen.add(key)
            _collect_lines(path, value_node, (*location, key), lines)
            lines[(*location, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            _collect_lines(path, child, (*location, index), lines)


def _describe(path: Path, exc: ValidationError, lines: Mapping[Location, int]) -> str:
    messages = []
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    for error in errors[:MAX_REPORTED_ERRORS]:
        location = _known_prefix(tuple(error["loc"]), lines)
        full = tuple(
            part for part in error["loc"] if isinstance(part, int) or not part.startswith("function-")
        )
        line = lines.get(location, 1)
        hint = " (quote it in YAML to make it text)" if error["type"] == "string_type" else ""
        messages.append(f"{path}:{line}: {_format(full) or '(top level)'}: {error['msg']}{hint}")
    if len(errors) > MAX_REPORTED_ERRORS:
        messages.append(f"... and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return "\n".join(messages)


def _known_prefix(location: Location, lines: Mapping[Location, int]) -> Location:
    best: Location = ()
    current: Location = ()
    for part in location:
        current = (*current, part)
        if current in lines:
            best = current
        elif not isinstance(part, int) and part.startswith("function-"):
            current = current[:-1]
    return best


def _format(location: Sequence[str | int]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---------------------------------------------------------------------------------------------- writing


def dump(vaults: Sequence[Vault], identity: ServerIdentity) -> str:
    """The data file for this state, in the same shape users write."""
    document = {
        "vaults": [_vault(vault) for vault in vaults],
        "server": {
            "id": identity.id,
            "account": identity.account,
            "signingKey": identity.signing_key.get_secret_value(),
        },
    }
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _vault(vault: Vault) -> dict[str, Any]:
    out: dict[str, Any] = {"id": vault.id, "name": vault.name}
    if vault.description:
        out["description"] = vault.description
    out |= {
        "type": vault.type,
        "attributeVersion": vault.attribute_version,
        "contentVersion": vault.content_version,
        "createdAt": format_time(vault.created_at),
        "updatedAt": format_time(vault.updated_at),
        "items": [_item(item) for item in vault.items],
    }
    return out


def _item(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.id, "title": item.title, "category": item.category}
    if item.favorite:
        out["favorite"] = True
    if item.tags:
        out["tags"] = list(item.tags)
    if item.urls:
        out["urls"] = [serialize.url_json(url) for url in item.urls]
    if item.sections:
        out["sections"] = [serialize.section_json(section) for section in item.sections]
    if item.fields:
        out["fields"] = [_field(field) for field in item.fields]
    if item.files:
        out["files"] = [_file(file) for file in item.files]
    out |= {
        "version": item.version,
        "createdAt": format_time(item.created_at),
        "updatedAt": format_time(item.updated_at),
    }
    if item.last_edited_by:
        out["lastEditedBy"] = item.last_edited_by
    return out


def _field(field: ItemField) -> dict[str, Any]:
    out: dict[str, Any] = {"id": field.id, "type": field.type}
    if field.purpose:
        out["purpose"] = field.purpose
    if field.label:
        out["label"] = field.label
    if field.value:
        out["value"] = field.value
    if field.section is not None:
        out["section"] = {"id": field.section.id}
    if field.entropy is not None:
        out["entropy"] = field.entropy
    return out


def _file(file: ItemFile) -> dict[str, Any]:
    out: dict[str, Any] = {"id": file.id, "name": file.name}
    if file.section is not None:
        out["section"] = {"id": file.section.id}
    text = _as_text(file.content)
    if text is not None:
        out["content"] = text
    else:
        out["content_base64"] = base64.b64encode(file.content).decode("ascii")
    return out


def _as_text(content: bytes) -> str | None:
    """The content as text if it is printable UTF-8 (kept readable in the file), else None."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(char.isprintable() or char in "\n\t" for char in text):
        return text
    return None


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as literal blocks (PEM keys stay readable)."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        if "\n" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="|")
        return super().represent_str(data)

    yaml_representers = {**yaml.SafeDumper.yaml_representers, str: cast(Any, represent_str)}


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves either the old or the new file, never a mix.

    The new file keeps the old one's permissions (``0600`` for a new file: it holds
    secrets and the token signing key).
    """
    path = path.absolute()
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
