"""Pick single values out of an item by a selector string: the ``spec.fields[].field`` language.

Users ask for "just the password, as ``DB_PASSWORD``" (official operator issues
#69, #128, #273). A selector names one value of an item:

* ``label``: a field with that label, in any section;
* ``section/label``: a field with that label in the section with that label
  (tried when no field has the whole text as its label);
* a field id, a URL label, a file name: tried next, in that order;
* ``field:<label>``, ``id:<field id>``, ``url:<label>``, ``file:<name>``: exactly
  that kind, nothing else tried (for labels that contain ``/`` or look like
  another kind).

A selector that matches nothing is :class:`FieldNotFound` (with the names that
do exist: labels and file names are not secret); one that matches several
fields with different values is ``FieldAmbiguous``, never a silent pick.
Pure functions; values stay bytes and never reach a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opsync.connect.models import Field, FullItem
from opsync.core.errors import Reason, SpecError
from opsync.core.mapping import sanitize_key

PREFIXES = ("field:", "id:", "url:", "file:")
_LISTED = 12


class FieldNotFound(SpecError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason=Reason.FieldNotFound)


@dataclass(frozen=True)
class Selected:
    """A value picked by a selector: its default key, what it is (for messages), the bytes."""

    key: str
    what: str
    value: bytes

    def __repr__(self) -> str:
        return f"Selected(key={self.key!r}, what={self.what!r}, {len(self.value)} bytes)"


def _field_value(field: Field) -> bytes:
    return field.value.get_secret_value().encode() if field.value is not None else b""


def section_label(item: FullItem, field: Field) -> str | None:
    """The label of the section ``field`` is in (by the field's own reference, else by id)."""
    if field.section is None:
        return None
    if field.section.label:
        return field.section.label
    labels = {s.id: s.label for s in item.sections or [] if s.id}
    return labels.get(field.section.id or "")


def _one_field(selector: str, item: FullItem, matches: Sequence[Field]) -> Selected | None:
    if not matches:
        return None
    if len({_field_value(f) for f in matches}) > 1:
        where = ", ".join(
            f"section {section_label(item, f) or '(none)'!r} (id:{f.id})" for f in matches[:_LISTED]
        )
        raise SpecError(
            f"field {selector!r} matches {len(matches)} fields of item {item.title!r}: {where}; "
            "name one as 'section/label' or 'id:<field id>'",
            reason=Reason.FieldAmbiguous,
        )
    field = matches[-1]
    return Selected(field.label or field.id or "", f"field {selector!r}", _field_value(field))


def _by_label(item: FullItem, label: str) -> Selected | None:
    return _one_field(label, item, [f for f in item.fields or [] if f.label == label])


def _by_section(item: FullItem, text: str) -> Selected | None:
    section, _, label = text.partition("/")
    if not label:
        return None
    matches = [f for f in item.fields or [] if f.label == label and section_label(item, f) == section]
    found = _one_field(text, item, matches)
    return Selected(label, found.what, found.value) if found else None


def _by_id(item: FullItem, field_id: str) -> Selected | None:
    return _one_field(field_id, item, [f for f in item.fields or [] if f.id == field_id])


def _by_url(item: FullItem, label: str) -> Selected | None:
    urls = [u for u in item.urls or [] if u.label == label]
    if not urls:
        return None
    # As the default mapping: the primary URL wins among equal labels, else the last one.
    url = next((u for u in urls if u.primary), urls[-1])
    return Selected(label, f"URL {label!r}", url.href.encode())


def _by_file(item: FullItem, name: str, files: Mapping[str, bytes]) -> Selected | None:
    found = [f for f in item.files or [] if f.name == name]
    if not found:
        return None
    if len(found) > 1:
        raise SpecError(
            f"item {item.title!r} has {len(found)} files named {name!r}; rename one in 1Password",
            reason=Reason.FieldAmbiguous,
        )
    file_id = found[0].id
    if file_id is None or file_id not in files:
        raise SpecError(f"the content of file {name!r} could not be read", reason=Reason.FileUnavailable)
    return Selected(name, f"file {name!r}", files[file_id])


def _available(item: FullItem) -> str:
    names = [f.label for f in item.fields or [] if f.label]
    names += [f"url:{u.label}" for u in item.urls or [] if u.label]
    names += [f"file:{f.name}" for f in item.files or [] if f.name]
    unique = list(dict.fromkeys(names))
    shown = ", ".join(repr(name) for name in unique[:_LISTED])
    return (shown + (", …" if len(unique) > _LISTED else "")) or "none"


def select(item: FullItem, files: Mapping[str, bytes], selector: str) -> Selected:
    """The value ``selector`` names in ``item`` (file contents by file id)."""
    kind, sep, rest = selector.partition(":")
    lookups: list[Callable[[], Selected | None]]
    if sep and f"{kind}:" in PREFIXES:
        lookups = [
            {
                "field": lambda: _by_label(item, rest),
                "id": lambda: _by_id(item, rest),
                "url": lambda: _by_url(item, rest),
                "file": lambda: _by_file(item, rest, files),
            }[kind]
        ]
    else:
        lookups = [
            lambda: _by_label(item, selector),
            lambda: _by_section(item, selector),
            lambda: _by_id(item, selector),
            lambda: _by_url(item, selector),
            lambda: _by_file(item, selector, files),
        ]
    for lookup in lookups:
        found = lookup()
        if found is not None:
            return found
    raise FieldNotFound(
        f"item {item.title!r} has no field {selector!r}; it has: {_available(item)} "
        "(labels are case-sensitive; use 'section/label', 'id:', 'url:' or 'file:' to be exact)"
    )


def default_key(selected: Selected) -> str:
    """The Secret key for a selected value when the selector gives none."""
    key = sanitize_key(selected.key)
    if not key:
        raise SpecError(
            f"{selected.what} has no characters usable in a Secret key; give it a key",
            reason=Reason.InvalidKey,
        )
    return key
