"""The Secret a OnePasswordItem asks for, composed from the items read: pure functions.

Without any of the shaping fields a target maps its one item by the official
operator's rules (:mod:`opsync.core.mapping`), so existing manifests give the same
Secret. The shaping fields apply in this order:

1. every item (``spec.itemPath`` first, then ``spec.items``) gives keys: all
   of its values by the official rules, or only those ``fields`` selects
   (:mod:`opsync.core.selection`), renamed by ``key`` and put behind ``prefix``.
   A key given twice is ``KeyCollision``, never a silent overwrite;
2. ``spec.dockerConfig`` replaces those keys with one ``.dockerconfigjson``
   built from the first item's fields;
3. ``spec.template`` renders keys in a sandbox (:mod:`opsync.core.templating`) over
   the items and the keys so far; with ``mergePolicy: Replace`` (the default)
   they are the Secret's only keys, with ``Merge`` they are added;
4. the Secret type's rules (:mod:`opsync.core.secrettypes`) check required keys and
   convert what must be (an SSH key to OpenSSH), before anything is written.

Any failure raises a :class:`~opsync.core.errors.SpecError` whose message names the
field, key or template position, so the caller writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opsync.core.crd import RESERVED_ANNOTATION_PREFIXES, FieldSelector, OnePasswordItemSpec
from opsync.core.errors import Reason, SpecError
from opsync.core.itempath import Fetched
from opsync.core.mapping import DNS1123_SUBDOMAIN, SecretData, Skipped, is_valid_key, item_to_data
from opsync.core.selection import default_key, section_label, select

MAX_DATA_BYTES = 1024 * 1024 - 64 * 1024
"""Kubernetes refuses a Secret over 1 MiB; this leaves room for its metadata."""


@dataclass(frozen=True)
class Source:
    """One item of a target, and which of its values go into the Secret."""

    item_path: str
    fields: tuple[FieldSelector, ...] | None = None
    prefix: str = ""

    def describe(self) -> str:
        return f"item {self.item_path}"


def sources_of(spec: OnePasswordItemSpec | None, item_path: str | None) -> tuple[Source, ...]:
    """The items a target composes, in order: ``itemPath`` (with ``fields``), then ``items``."""
    found: list[Source] = []
    if item_path:
        selected = spec.fields if spec is not None else None
        found.append(Source(item_path, tuple(selected) if selected is not None else None))
    for extra in (spec.items if spec is not None else None) or []:
        selected = extra.fields
        found.append(
            Source(extra.itemPath, tuple(selected) if selected is not None else None, extra.prefix or "")
        )
    return tuple(found)


@dataclass(frozen=True)
class Composed:
    """The Secret's content and the metadata the spec adds to it."""

    data: SecretData
    type: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()
    content_checked: bool = False
    """Whether the type has content rules (see :mod:`opsync.core.secrettypes`)."""
    content_problem: str | None = None
    """What the checks found wrong with content written anyway (``typeCheck: Warn``)."""


def _collision(key: str, first: str, second: str) -> SpecError:
    return SpecError(
        f"key {key!r} comes from both {first} and {second}; rename one with 'key', or give "
        "spec.items[].prefix",
        reason=Reason.KeyCollision,
    )


class _Keys:
    """Secret data being assembled, remembering where each key came from.

    ``lenient``: the keys only feed a template's ``data`` (``dockerConfig`` or a ``Replace``
    template makes the Secret's keys), so two items giving one key is no error unless the
    template reads that key (see :class:`_Clash`).
    """

    def __init__(self, *, lenient: bool = False) -> None:
        self.data: dict[str, bytes] = {}
        self.origin: dict[str, str] = {}
        self.lenient = lenient
        self.clashes: dict[str, str] = {}

    def add(self, key: str, value: bytes, origin: str) -> None:
        if not is_valid_key(key):
            raise SpecError(
                f"{origin} gives the key {key!r}, which is not a valid Secret key "
                "([-._a-zA-Z0-9]+, at most 253 characters)",
                reason=Reason.InvalidKey,
            )
        if key in self.clashes:
            return
        if key in self.data:
            if not self.lenient:
                raise _collision(key, self.origin[key], origin)
            self.origin.pop(key)
            self.clashes[key] = (
                f"{key!r} in data is given by more than one item; read it from items[n].fields, "
                "or rename it with key or prefix"
            )
            del self.data[key]
            return
        self.data[key] = value
        self.origin[key] = origin


class _Clash:
    """A key of a template's ``data`` that two items give: reading it fails, saying so."""

    def __init__(self, message: str) -> None:
        self._message = message

    def __str__(self) -> str:
        raise ValueError(self._message)

    def __repr__(self) -> str:
        return "_Clash()"


def _mapped(
    sources: Sequence[Source], fetched: Sequence[Fetched], allow_empty_values: bool, *, lenient: bool
) -> tuple[_Keys, tuple[Skipped, ...]]:
    keys = _Keys(lenient=lenient)
    skipped: list[Skipped] = []
    for source, got in zip(sources, fetched, strict=True):
        if source.fields is None:
            mapped = item_to_data(got.item, got.files, allow_empty_values=allow_empty_values)
            skipped.extend(mapped.skipped)
            for key, value in mapped.data.items():
                keys.add(source.prefix + key, value, f"{source.describe()} (key {key!r})")
            continue
        for selector in source.fields:
            # An explicitly selected value is written even when empty: it was asked for.
            selected = select(got.item, got.files, selector.field)
            key = selector.key or default_key(selected)
            keys.add(source.prefix + key, selected.value, f"{selected.what} of {source.describe()}")
    return keys, tuple(skipped)


def _typed(
    secret_type: str, data: Mapping[str, bytes], *, strict: bool
) -> tuple[dict[str, bytes], bool, str | None]:
    """The data checked (and with ``strict`` converted) for its type, whether the type has
    rules, and what is wrong with content written anyway. An Opaque Secret has no rules, so the
    type checks (and the cryptography library they load) are imported only for the other types."""
    if secret_type == "Opaque":  # noqa: S105 - a type name
        return dict(data), False, None
    from opsync.core import secrettypes

    prepared = secrettypes.prepare(secret_type, data, strict=strict)
    return prepared.data, secrettypes.has_rules(secret_type), prepared.problem


def _text(got: Fetched, selector: str) -> str:
    return select(got.item, got.files, selector).value.decode("utf-8", errors="replace")


def _docker_config(spec: OnePasswordItemSpec, got: Fetched, type_: str | None) -> bytes:
    from opsync.core import secrettypes

    config = spec.dockerConfig
    assert config is not None
    if type_ not in (None, "", secrettypes.DOCKER_CONFIG_JSON):
        raise SpecError(
            f"spec.dockerConfig makes a {secrettypes.DOCKER_CONFIG_JSON} Secret but type is {type_!r}; "
            "remove type or set it to that",
            reason=Reason.InvalidSpec,
        )
    server = config.server if config.server is not None else _text(got, config.serverField or "")
    email = _text(got, config.emailField) if config.emailField else None
    return secrettypes.docker_config_json(
        server.strip(), _text(got, config.usernameField), _text(got, config.passwordField), email
    )


# -- templates -----------------------------------------------------------------------------------


def _item_view(got: Fetched, *, with_values: bool) -> dict[str, Any]:
    from opsync.core import templating

    item = got.item
    view: dict[str, Any] = {
        "id": item.id,
        "title": item.title,
        "vault": got.resolved.vault,
        "version": item.version,
        "category": item.category,
        "tags": list(item.tags or []),
    }
    if not with_values:
        return view
    fields: dict[str, str] = {}
    by_section: dict[str, dict[str, str]] = {}
    for item_field in item.fields or []:
        if not item_field.label:
            continue
        value = item_field.value.get_secret_value() if item_field.value is not None else ""
        fields[item_field.label] = value  # the last field wins, as in the default mapping
        label = section_label(item, item_field)
        if label:
            by_section.setdefault(label, {})[item_field.label] = value
    urls = item.urls or []
    primary = next((u.href for u in urls if u.primary), urls[0].href if urls else None)
    view.update(
        fields=fields,
        sections=by_section,
        urls={u.label: u.href for u in urls if u.label},
        url=primary,
        files={
            f.name: templating.Blob(got.files[f.id])
            for f in item.files or []
            if f.name and f.id and f.id in got.files
        },
    )
    return view


def _secrets(fetched: Sequence[Fetched], data: Mapping[str, bytes]) -> list[str]:
    """Every value a template error message could echo, for redaction."""
    found: list[str] = []
    for got in fetched:
        found += [f.value.get_secret_value() for f in got.item.fields or [] if f.value is not None]
        found += [u.href for u in got.item.urls or []]
        found += [content.decode("utf-8", errors="ignore") for content in got.files.values()]
    found += [value.decode("utf-8", errors="ignore") for value in data.values()]
    return found


def _rendered(spec: OnePasswordItemSpec, fetched: Sequence[Fetched], keys: _Keys) -> _Keys:
    from opsync.core import templating

    template = spec.template
    assert template is not None
    views = [_item_view(got, with_values=True) for got in fetched]
    context = {
        "item": views[0],
        "items": views,
        "data": {
            **{key: _Clash(message) for key, message in keys.clashes.items()},
            **{key: templating.Blob(value) for key, value in keys.data.items()},
        },
    }
    secrets = _secrets(fetched, keys.data)
    out = keys if template.mergePolicy == "Merge" else _Keys()
    for key, source in (template.stringData or {}).items():
        where = f"template.stringData.{key}"
        text = templating.render(where, source, context, secrets=secrets)
        out.add(key, text.encode(), where)
    for key, source in (template.data or {}).items():
        where = f"template.data.{key}"
        text = templating.render(where, source, context, secrets=secrets)
        try:
            value = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise SpecError(
                f"{where}: the output is not base64; use template.stringData for text, or end the "
                "template with '| b64encode'",
                reason=Reason.TemplateError,
            ) from None
        out.add(key, value, where)
    return out


def _metadata(spec: OnePasswordItemSpec, fetched: Sequence[Fetched]) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations: ``secretLabels``/``secretAnnotations``, then the rendered
    metadata templates. Those see the items' ids, titles, versions and tags, never values:
    anyone who may list Secrets can read labels and annotations."""
    labels = dict(spec.secretLabels or {})
    annotations = dict(spec.secretAnnotations or {})
    meta = spec.template.metadata if spec.template is not None else None
    if meta is None:
        _check_metadata(labels, annotations)
        return labels, annotations
    from opsync.core import templating

    views = [_item_view(got, with_values=False) for got in fetched]
    context = {"item": views[0], "items": views}
    for kind, templates, target in (
        ("labels", meta.labels, labels),
        ("annotations", meta.annotations, annotations),
    ):
        for key, source in (templates or {}).items():
            if key.startswith(RESERVED_ANNOTATION_PREFIXES):
                raise SpecError(
                    f"template.metadata.{kind}.{key}: keys under {' and '.join(RESERVED_ANNOTATION_PREFIXES)} "
                    "are set by the operator; choose another key",
                    reason=Reason.InvalidSpec,
                )
            target[key] = templating.render(f"template.metadata.{kind}.{key}", source, context).strip()
    _check_metadata(labels, annotations)
    return labels, annotations


_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_QUALIFIED_NAME = re.compile(rf"^({DNS1123_SUBDOMAIN}/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
MAX_ANNOTATIONS_BYTES = 256 * 1024


def _check_metadata(labels: Mapping[str, str], annotations: Mapping[str, str]) -> None:
    """The API server's rules for label and annotation keys and label values, checked here so
    that the status names the key and the rule instead of relaying a bare 422."""
    rule = (
        "a key is an optional DNS prefix and '/', then at most 63 characters of [-A-Za-z0-9_.] "
        "starting and ending with a letter or digit"
    )
    for kind, keys in (("label", labels), ("annotation", annotations)):
        for key in keys:
            if not _QUALIFIED_NAME.match(key) or len(key.rpartition("/")[2]) > 63:
                raise SpecError(f"{kind} key {key!r} is not valid: {rule}", reason=Reason.InvalidMetadata)
    for key, value in labels.items():
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise SpecError(
                f"label {key}={value!r} is not valid: a label value has at most 63 characters of "
                "[-A-Za-z0-9_.], starting and ending with a letter or digit",
                reason=Reason.InvalidMetadata,
            )
    size = sum(len(key) + len(value) for key, value in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        raise SpecError(
            f"the annotations come to {size} bytes; Kubernetes allows 256 KiB", reason=Reason.InvalidMetadata
        )


# -- the whole ------------------------------------------------------------------------------------


def compose(
    spec: OnePasswordItemSpec | None,
    sources: Sequence[Source],
    fetched: Sequence[Fetched],
    *,
    type_: str | None,
    allow_empty_values: bool = False,
) -> Composed:
    """The Secret for ``sources`` read as ``fetched`` (same order), shaped by ``spec``."""
    template = spec.template if spec is not None else None
    rendered = template is not None and bool(template.data or template.stringData)
    docker = spec.dockerConfig is not None if spec is not None else False
    # Keys the Secret will not hold cannot collide: with dockerConfig or a Replace template.
    replaced = docker or (rendered and template is not None and template.mergePolicy == "Replace")
    keys, skipped = _mapped(sources, fetched, allow_empty_values, lenient=replaced)
    secret_type = type_ or "Opaque"
    if spec is not None and docker:
        built = _docker_config(spec, fetched[0], type_)
        keys = _Keys()
        keys.add(".dockerconfigjson", built, "spec.dockerConfig")
        secret_type = "kubernetes.io/dockerconfigjson"  # noqa: S105 - a type name
    if spec is not None and rendered:
        keys = _rendered(spec, fetched, keys)
    labels, annotations = _metadata(spec, fetched) if spec is not None else ({}, {})
    # Strict where asked, and for dockerConfig (opsync's own typed feature); otherwise the
    # content is written as the official operator writes it, and what is wrong is reported.
    strict = spec is not None and (spec.typeCheck == "Strict" or docker)
    data, checked, problem = _typed(secret_type, keys.data, strict=strict)
    size = sum(len(key) + len(value) for key, value in data.items())
    if size > MAX_DATA_BYTES:
        raise SpecError(
            f"the Secret would hold {size} bytes; Kubernetes allows 1 MiB. Select fewer fields or files",
            reason=Reason.SecretTooLarge,
        )
    return Composed(
        SecretData(data),
        secret_type,
        labels,
        annotations,
        skipped,
        content_checked=checked,
        content_problem=problem,
    )
