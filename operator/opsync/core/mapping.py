"""Item → Secret: the official 1Password operator's mapping rules, as pure functions.

Drop-in compatibility lives or dies here, so every rule of the official
operator's Secret builder is reproduced and named:

1. URLs first, keyed by label; among URLs with the same key the primary one
   wins, else the last one.
2. Then fields of every section, keyed by label; each overwrites what came
   before (the last field wins, and fields override URLs).
3. Then files, keyed by file name, only where the key is still free.
4. A label that is a valid Secret key is kept verbatim (case preserved);
   otherwise leading/trailing runs of invalid characters are stripped, inner
   runs become one ``-``, and the key is cut to 253 characters. A label that
   sanitises to nothing is skipped.
5. Empty values are skipped unless empty values are allowed.

The official operator drops values without a word; opsync keeps its rules exactly
but names in :attr:`MappedItem.skipped` (by label, never by value) what they drop or
change: a label with no usable key, an empty value, a URL whose key a field takes,
a URL or field whose key a later one with a *different* label takes (``a b``, ``a-b``
and ``a  b!`` all become ``a-b``; the same label given twice, say in two sections,
is the official "last field wins" rule and is not named), a file whose key is taken
or whose content could not be fetched, and, as a ``kept`` entry whose value is
written, a key cut to 253 characters.

Nothing here performs I/O, and values stay inside :class:`SecretData`, whose
repr shows key names and sizes only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from opsync.connect.models import FullItem

MAX_KEY_LENGTH = 253
_VALID_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_EDGE_INVALID = re.compile(r"^[^-._a-zA-Z0-9]+|[^-._a-zA-Z0-9]+$")
_INNER_INVALID = re.compile(r"[^-._a-zA-Z0-9]+")
DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN = re.compile(rf"^{DNS1123_SUBDOMAIN}$")
_NAME_INVALID = re.compile(r"[^a-z0-9\-.]+")


def is_valid_key(key: str) -> bool:
    """A valid Secret/ConfigMap data key: ``[-._a-zA-Z0-9]+``, at most 253, not ``.``/``..``."""
    return bool(_VALID_KEY.match(key)) and len(key) <= MAX_KEY_LENGTH and key not in {".", ".."}


def sanitize_key(label: str) -> str:
    """The Secret data key for an item label; ``""`` when nothing usable is left."""
    if is_valid_key(label):
        return label
    key = _collapsed(label)[:MAX_KEY_LENGTH]
    # The official builder can produce "." or ".."; the API server would refuse those.
    return key if is_valid_key(key) else ""


def _collapsed(label: str) -> str:
    """``label`` with invalid characters dropped at its ends and inner runs made ``-`` (uncut)."""
    return _INNER_INVALID.sub("-", _EDGE_INVALID.sub("", label))


def sanitize_secret_name(name: str) -> str:
    """A valid Secret name (DNS-1123 subdomain) for ``name``, as the official operator derives it."""
    if len(name) <= MAX_KEY_LENGTH and _DNS1123_SUBDOMAIN.match(name):
        return name
    return _NAME_INVALID.sub("-", name.lower())[:MAX_KEY_LENGTH].strip("-.")


class SecretData(Mapping[str, bytes]):
    """Secret data: key → value bytes. Its repr and str show key names and sizes, never values."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, bytes] | None = None) -> None:
        self._data: dict[str, bytes] = dict(data or {})

    def __getitem__(self, key: str) -> bytes:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretData):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{key}: {len(value)} bytes" for key, value in sorted(self._data.items()))
        return f"SecretData({{{sizes}}})"

    __str__ = __repr__

    def digest(self) -> str:
        """A SHA-256 over keys and values: equal digests mean equal data."""
        hasher = hashlib.sha256()
        for key in sorted(self._data):
            value = self._data[key]
            for part in (key.encode(), value):
                hasher.update(len(part).to_bytes(8, "big"))
                hasher.update(part)
        return hasher.hexdigest()


@dataclass(frozen=True)
class Skipped:
    """Something of the item that did not become a key as labelled, and why (names only, never values)."""

    source: str
    """``url``, ``field`` or ``file``."""
    name: str
    """The label or key, shortened to :data:`MAX_NAME_LENGTH` characters plus ``…``."""
    reason: str
    kept: bool = False
    """True when the value is written all the same (under a key cut to 253 characters):
    a note, not something left out."""


@dataclass(frozen=True)
class MappedItem:
    """The result of mapping an item: the data, and what was left out or changed."""

    data: SecretData
    skipped: tuple[Skipped, ...] = field(default=())
    """What was left out, in the order the rules meet it, then the ``kept`` notes."""


MAX_NAME_LENGTH = 40
"""Labels and keys longer than this are shortened in :class:`Skipped` entries."""


def short(name: str) -> str:
    """``name`` as messages show it: at most :data:`MAX_NAME_LENGTH` characters, then ``…``."""
    return name if len(name) <= MAX_NAME_LENGTH else name[:MAX_NAME_LENGTH] + "…"


def _is_cut(label: str) -> bool:
    """Whether :func:`sanitize_key` cuts ``label``'s key to :data:`MAX_KEY_LENGTH`."""
    return not is_valid_key(label) and len(_collapsed(label)) > MAX_KEY_LENGTH


def item_to_data(
    item: FullItem,
    files: Mapping[str, bytes] | None = None,
    *,
    allow_empty_values: bool = False,
) -> MappedItem:
    """Apply the official rules to ``item`` and its file contents (by file id)."""
    data: dict[str, bytes] = {}
    holder: dict[str, tuple[str, str]] = {}  # which (source, label) wrote each key of data
    skipped: list[Skipped] = []

    def skip(source: str, name: str, reason: str) -> None:
        skipped.append(Skipped(source, short(name), reason))

    def key_for(source: str, label: str | None) -> str | None:
        key = sanitize_key(label or "")
        if not key:
            skip(source, label or "", "the label has no usable characters for a Secret key")
            return None
        return key

    def is_empty(source: str, label: str, value: bytes) -> bool:
        if value or allow_empty_values:
            return False
        skip(source, label, "empty value (set --allow-empty-values to keep it)")
        return True

    def write(key: str, value: bytes, source: str, label: str) -> None:
        """Write ``key``, naming the value it replaces unless the same label wrote it (the
        official "last wins" rule for a label given twice)."""
        before = holder.get(key)
        if before is not None and (before[0] != source or before[1] != label):
            skip(*before, f"its key {short(key)} is taken by {_later(source, label, before[0])}")
        data[key] = value
        holder[key] = (source, label)

    primary_keys: set[str] = set()
    for url in item.urls or []:
        label = url.label or ""
        key = key_for("url", label)
        if key is None or is_empty("url", key, url.href.encode()):
            continue
        if key in primary_keys and not url.primary:
            if holder[key][1] != label:
                skip(
                    "url",
                    label,
                    f"its key {short(key)} is taken by the primary URL {short(holder[key][1])!r}",
                )
            continue
        write(key, url.href.encode(), "url", label)
        if url.primary:
            primary_keys.add(key)

    for item_field in item.fields or []:
        label = item_field.label or ""
        key = key_for("field", label)
        value = item_field.value.get_secret_value().encode() if item_field.value is not None else b""
        if key is None or is_empty("field", key, value):
            continue
        write(key, value, "field", label)

    contents = files or {}
    for item_file in item.files or []:
        key = key_for("file", item_file.name)
        if key is None:
            continue
        if key in data:
            source, label = holder[key]
            skip("file", key, f"the {source} {short(label)!r} already has this key")
            continue
        if item_file.id is None or item_file.id not in contents:
            skip("file", key, "its content could not be fetched")
            continue
        if is_empty("file", key, contents[item_file.id]):
            continue
        data[key] = contents[item_file.id]
        holder[key] = ("file", item_file.name or "")

    for source, label in holder.values():
        if _is_cut(label):
            skipped.append(
                Skipped(
                    source,
                    short(label),
                    f"written under its key cut to {MAX_KEY_LENGTH} characters, the most Kubernetes allows",
                    kept=True,
                )
            )

    return MappedItem(SecretData(data), tuple(skipped))


_KINDS = {"url": "URL"}


def _later(source: str, label: str, replaced: str) -> str:
    """Who takes a key from a value of kind ``replaced``, and by which rule."""
    if source == "field" and replaced == "url":
        return f"the field {short(label)!r}; fields override URLs"
    return f"a later {_KINDS.get(source, source)} {short(label)!r}; the last wins"
