"""The ``OnePasswordItem`` custom resource: its pydantic models and the CRD derived from them.

The models are the one source of truth. The operator parses every object
through them, and ``definition()`` turns their JSON schema into the structural
OpenAPI schema of the CustomResourceDefinition in ``crds/`` (a test fails when
the committed YAML and the models drift apart). The shape is the official
1Password operator's, so its manifests apply unchanged: group
``onepassword.com``, version ``v1``, ``spec.itemPath`` and a top-level ``type``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsync.core.mapping import DNS1123_SUBDOMAIN, is_valid_key

GROUP = "onepassword.com"
VERSION = "v1"
KIND = "OnePasswordItem"
PLURAL = "onepassworditems"
SINGULAR = "onepassworditem"
SHORT_NAMES = ("opi",)
API_VERSION = f"{GROUP}/{VERSION}"
CRD_NAME = f"{PLURAL}.{GROUP}"

ITEM_PATH_PATTERN = r"^vaults/[^/]+/items/[^/]+$"
ITEM_PATH_HELP = (
    "itemPath must be 'vaults/<vault id or title>/items/<item id or title>', "
    "for example 'vaults/Kubernetes/items/db-credentials'"
)


READY_COLUMNS: tuple[dict[str, str], ...] = (
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
)
"""``kubectl get`` columns of every opsync kind: its Ready condition's status and reason."""


class _Model(BaseModel):
    # Spec content is user input, never secret, but keep errors terse all the same.
    model_config = ConfigDict(hide_input_in_errors=True, populate_by_name=True)


KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
PREFIX_PATTERN = r"^[-._a-zA-Z0-9]*$"
SECRET_NAME_PATTERN = f"^{DNS1123_SUBDOMAIN}$"
MAX_FIELDS = 100
MAX_ITEMS = 20
ONE_SERVER = "dockerConfig needs exactly one of server and serverField"
FIELDS_NEED_ITEM = "spec.fields selects from spec.itemPath, which is not set; use spec.items[].fields"
RESERVED_ANNOTATION_PREFIXES = ("operator.1password.io/", "opsync.io/")
SELECTOR_HELP = (
    "A field label (any section), 'section/label', a field id, a URL label or a file name, "
    "tried in that order; the prefixes 'field:', 'id:', 'url:' and 'file:' name exactly one kind."
)


def _check_item_path(value: str | None) -> str | None:
    if value is not None and not re.match(ITEM_PATH_PATTERN, value):
        raise ValueError(ITEM_PATH_HELP)
    return value


def _item_path_field(description: str, *, required: bool = False) -> Any:
    return Field(
        default=... if required else None,
        max_length=512,
        description=description,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches('{ITEM_PATH_PATTERN}')", "message": ITEM_PATH_HELP}
            ]
        },
    )


class FieldSelector(_Model):
    """One value of an item to put in the Secret, optionally under another key."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    field: str = Field(min_length=1, max_length=512, description=SELECTOR_HELP)
    key: str | None = Field(
        default=None,
        max_length=253,
        pattern=KEY_PATTERN,
        description="The Secret key; default: the label or file name, made a valid key.",
    )


class ItemSource(_Model):
    """One more item to compose into the Secret."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    itemPath: str = _item_path_field("The item, as vaults/<vault>/items/<item>.", required=True)
    fields: list[FieldSelector] | None = Field(
        default=None,
        max_length=MAX_FIELDS,
        description="Only these values of the item (default: all, by the usual rules).",
    )
    prefix: str | None = Field(
        default=None,
        max_length=200,
        pattern=PREFIX_PATTERN,
        description="Put in front of every key from this item, e.g. 'db_'.",
    )

    _check = field_validator("itemPath")(_check_item_path)


MAX_TEMPLATE_LENGTH = 16 * 1024
"""Jinja cannot be interrupted while it parses, so a template's size is bounded at admission."""
TemplateText = Annotated[str, Field(max_length=MAX_TEMPLATE_LENGTH)]
TEMPLATE_KEYS = 64


class TemplateMetadata(_Model):
    """Labels and annotations rendered from the items' non-secret attributes."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    labels: dict[str, TemplateText] | None = Field(
        default=None, max_length=TEMPLATE_KEYS, description="Label templates."
    )
    annotations: dict[str, TemplateText] | None = Field(
        default=None, max_length=TEMPLATE_KEYS, description="Annotation templates."
    )


class SecretTemplate(_Model):
    """Secret keys rendered by a sandboxed Jinja2 template over the items."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    data: dict[str, TemplateText] | None = Field(
        default=None,
        max_length=TEMPLATE_KEYS,
        description="Key: a template whose output is base64 (for binary values).",
    )
    stringData: dict[str, TemplateText] | None = Field(
        default=None,
        max_length=TEMPLATE_KEYS,
        description="Key: a template whose output is the value, as text.",
    )
    metadata: TemplateMetadata | None = Field(
        default=None, description="Labels and annotations; templates see no field values or files."
    )
    mergePolicy: Literal["Replace", "Merge"] = Field(
        default="Replace",
        description=(
            "Replace (default): the Secret holds only the rendered keys. "
            "Merge: the rendered keys are added to the mapped ones."
        ),
    )

    @field_validator("data", "stringData")
    @classmethod
    def _keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not is_valid_key(key):
                raise ValueError(f"{key!r} is not a valid Secret key ([-._a-zA-Z0-9]+)")
        return value


class DockerConfig(_Model):
    """Build a kubernetes.io/dockerconfigjson Secret from an item's fields."""

    model_config = ConfigDict(
        hide_input_in_errors=True,
        extra="forbid",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.server) != has(self.serverField)",
                    "message": ONE_SERVER,
                }
            ]
        },
    )

    server: str | None = Field(
        default=None, min_length=1, description="The registry, e.g. ghcr.io (or give serverField)."
    )
    serverField: str | None = Field(
        default=None, min_length=1, description="The field holding the registry (instead of server)."
    )
    usernameField: str = Field(min_length=1, description="The field holding the user name.")
    passwordField: str = Field(min_length=1, description="The field holding the password or token.")
    emailField: str | None = Field(default=None, min_length=1, description="The field holding an email.")

    @model_validator(mode="after")
    def _one_server(self) -> DockerConfig:
        if (self.server is None) == (self.serverField is None):
            raise ValueError(ONE_SERVER)
        return self


CONNECTION_KIND = "OnePasswordConnection"
CLUSTER_CONNECTION_KIND = "ClusterOnePasswordConnection"
CONNECTION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class ConnectionRefSpec(_Model):
    """``spec.connectionRef`` of a OnePasswordItem."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    kind: Literal["OnePasswordConnection", "ClusterOnePasswordConnection"] = Field(
        default="OnePasswordConnection",
        description="OnePasswordConnection (default) or ClusterOnePasswordConnection.",
    )
    name: str = Field(
        min_length=1, max_length=253, pattern=CONNECTION_NAME_PATTERN, description="The connection's name."
    )
    namespace: str | None = Field(
        default=None,
        max_length=63,
        description="A OnePasswordConnection's namespace: the item's own (the default); any other is refused.",
    )


class OnePasswordItemSpec(_Model):
    """What to sync: one 1Password item, or several, and how to shape the Secret."""

    model_config = ConfigDict(
        hide_input_in_errors=True,
        extra="ignore",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.fields) || has(self.itemPath)", "message": FIELDS_NEED_ITEM},
            ]
        },
    )

    itemPath: str | None = _item_path_field(
        "The item to sync, as vaults/<vault>/items/<item>; vault and item may each be "
        "a 26-character id or a title."
    )
    fields: list[FieldSelector] | None = Field(
        default=None,
        max_length=MAX_FIELDS,
        description="Only these values of the itemPath item, optionally renamed (default: all).",
    )
    items: list[ItemSource] | None = Field(
        default=None,
        max_length=MAX_ITEMS,
        description="More items composed into the same Secret; a key two items give is an error.",
    )
    template: SecretTemplate | None = Field(default=None, description="Render keys from templates.")
    dockerConfig: DockerConfig | None = Field(
        default=None, description="Make a kubernetes.io/dockerconfigjson Secret from the first item."
    )
    secretName: str | None = Field(
        default=None,
        max_length=253,
        pattern=SECRET_NAME_PATTERN,
        description="The Secret's name (default: the OnePasswordItem's name).",
    )
    secretLabels: dict[str, str] | None = Field(default=None, description="Extra labels on the Secret.")
    secretAnnotations: dict[str, str] | None = Field(
        default=None,
        description="Extra annotations on the Secret.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, !k.startsWith('operator.1password.io/') && !k.startsWith('opsync.io/'))",
                    "message": "annotations under operator.1password.io/ and opsync.io/ are set by the operator",
                }
            ]
        },
    )
    deletionPolicy: Literal["Delete", "Retain"] | None = Field(
        default=None,
        description=(
            "Delete (default): the Secret goes with the OnePasswordItem. Retain: it stays, "
            "without opsync's ownerReference."
        ),
    )
    connectionRef: ConnectionRefSpec | None = Field(
        default=None,
        description=(
            "The connection (Connect server and token, opsync.io/v1alpha1) to read the items with; "
            "default: the operator's own OP_CONNECT_HOST and OP_CONNECT_TOKEN, unless switched off."
        ),
    )
    typeCheck: Literal["Warn", "Strict"] | None = Field(
        default=None,
        description=(
            "How the content of a typed Secret (top-level type) is checked. Warn (default): "
            "written as the item holds it, as the official operator does; what is wrong shows "
            "in the ContentValid condition and a Warning Event. Strict: checked, normalised and "
            "converted (an SSH key to OpenSSH) before writing, and refused when invalid."
        ),
    )

    _check = field_validator("itemPath")(_check_item_path)

    @field_validator("secretAnnotations")
    @classmethod
    def _not_reserved(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if key.startswith(RESERVED_ANNOTATION_PREFIXES):
                raise ValueError(f"annotation {key!r} is set by the operator; choose another key")
        return value

    @model_validator(mode="after")
    def _fields_need_item(self) -> OnePasswordItemSpec:
        if self.fields is not None and self.itemPath is None:
            raise ValueError(FIELDS_NEED_ITEM)
        return self


class Condition(_Model):
    """A status condition, as in metav1.Condition."""

    type: str = Field(
        description="The condition type: 'Ready', and 'ContentValid' for a typed Secret (top-level type)."
    )
    status: str = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="A CamelCase reason, e.g. Synced or ItemNotFound.")
    message: str | None = Field(default=None, description="What happened and, on failure, what to fix.")
    lastTransitionTime: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observedGeneration: int | None = Field(default=None, description="The generation this was computed for.")


class ItemStatus(_Model):
    """One item composed into the Secret."""

    itemPath: str = Field(description="The resolved path, vaults/<vault id>/items/<item id>.")
    itemVersion: int = Field(description="The item version last written.")


class OnePasswordItemStatus(_Model):
    """What opsync last did with this item."""

    conditions: list[Condition] = Field(
        description="Ready and its reason; ContentValid when the Secret's type has content rules."
    )
    itemPath: str | None = Field(
        default=None, description="The resolved path, vaults/<vault id>/items/<item id>."
    )
    itemVersion: int | None = Field(default=None, description="The item version last written to the Secret.")
    lastSyncTime: str | None = Field(
        default=None,
        description=(
            "When this status last changed, i.e. when opsync last found something new; "
            "polls that find the item unchanged write nothing."
        ),
    )
    observedGeneration: int | None = Field(default=None, description="The generation last reconciled.")
    secretName: str | None = Field(default=None, description="The Secret last written.")
    items: list[ItemStatus] | None = Field(
        default=None, description="Every item composed into the Secret, when there are several."
    )


class OnePasswordItem(_Model):
    """A OnePasswordItem object as stored in Kubernetes."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")

    spec: OnePasswordItemSpec | None = Field(default=None, description="The item to sync.")
    type: str | None = Field(
        default=None,
        description="The type of the Secret to create, e.g. Opaque (the default; '' means Opaque).",
    )
    status: OnePasswordItemStatus | None = Field(default=None, description="Set by the operator.")


class Placement(_Model):
    """``secretName`` and ``deletionPolicy`` alone, for a spec whose other fields do not parse."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")

    secretName: str | None = Field(default=None, max_length=253, pattern=SECRET_NAME_PATTERN)
    deletionPolicy: Literal["Delete", "Retain"] | None = None


def parse_placement(raw: dict[str, Any]) -> Placement:
    """The spec's valid ``secretName`` and ``deletionPolicy``; an invalid one is left out."""
    values = {}
    for name in Placement.model_fields:
        try:
            Placement.model_validate({name: raw.get(name)})
        except ValidationError:
            continue
        values[name] = raw.get(name)
    return Placement.model_validate(values)


def parse_spec(raw: dict[str, Any]) -> tuple[OnePasswordItemSpec | None, str | None]:
    """The spec, or None and what is wrong with it, worded for a status message."""
    try:
        return OnePasswordItemSpec.model_validate(raw), None
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(["spec", *(str(part) for part in error["loc"])])
            + ": "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors(include_url=False, include_input=False)
        )
        return None, f"the spec is invalid: {problems}"


# -- CRD rendering -------------------------------------------------------------------------------

_DROP_KEYS = {"title", "default"}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema.

    References are inlined, ``anyOf [X, null]`` becomes X (absent means null in
    Kubernetes), titles and null defaults go away.
    """
    if "$ref" in schema:
        resolved = dict(defs[schema["$ref"].rsplit("/", 1)[-1]])
        resolved.update({k: v for k, v in schema.items() if k != "$ref"})
        return _structural(resolved, defs)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        if len(options) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            inner = _structural(options[0], defs)
            inner.update({k: v for k, v in merged.items() if k not in _DROP_KEYS})
            return _structural(inner, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties" and value is False:
            continue
        else:
            out[key] = value
    return out


def openapi_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of the whole object."""
    raw = OnePasswordItem.model_json_schema()
    schema = _structural(raw, raw.get("$defs", {}))
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    schema["description"] = "OnePasswordItem is the Schema for the onepassworditems API."
    return schema


def definition() -> dict[str, Any]:
    """The CustomResourceDefinition object for ``OnePasswordItem``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *READY_COLUMNS,
                        {"name": "Item Version", "type": "integer", "jsonPath": ".status.itemVersion"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def definition_yaml() -> str:
    header = "# Generated from opsync.core.crd by `make crds`; do not edit by hand.\n"
    import yaml  # only `opsync crd` needs it

    return header + yaml.safe_dump(definition(), sort_keys=False, width=120)
