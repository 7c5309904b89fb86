"""The ``OnePasswordItem`` custom resource: its pydantic models and the CRD derived from them.

The models are the one source of truth. The operator parses every object
through them, and ``render_crd()`` turns their JSON schema into the structural
OpenAPI schema of the CustomResourceDefinition in ``crds/`` (a test fails when
the committed YAML and the models drift apart). The shape is the official
1Password operator's, so its manifests apply unchanged: group
``onepassword.com``, version ``v1``, ``spec.itemPath`` and a top-level ``type``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class _Model(BaseModel):
    # Spec content is user input, never secret, but keep errors terse all the same.
    model_config = ConfigDict(hide_input_in_errors=True, populate_by_name=True)


class OnePasswordItemSpec(_Model):
    """What to sync: one 1Password item."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")

    itemPath: str | None = Field(
        default=None,
        description=(
            "The item to sync, as vaults/<vault>/items/<item>; vault and item may each be "
            "a 26-character id or a title."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches('{ITEM_PATH_PATTERN}')", "message": ITEM_PATH_HELP}
            ]
        },
    )

    @field_validator("itemPath")
    @classmethod
    def _item_path_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.match(ITEM_PATH_PATTERN, value):
            raise ValueError(ITEM_PATH_HELP)
        return value


class Condition(_Model):
    """A status condition, as in metav1.Condition."""

    type: str = Field(description="The condition type; opsync sets 'Ready'.")
    status: str = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="A CamelCase reason, e.g. Synced or ItemNotFound.")
    message: str | None = Field(default=None, description="What happened and, on failure, what to fix.")
    lastTransitionTime: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observedGeneration: int | None = Field(default=None, description="The generation this was computed for.")


class OnePasswordItemStatus(_Model):
    """What opsync last did with this item."""

    conditions: list[Condition] = Field(description="Ready and its reason.")
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


class OnePasswordItem(_Model):
    """A OnePasswordItem object as stored in Kubernetes."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")

    spec: OnePasswordItemSpec | None = Field(default=None, description="The item to sync.")
    type: str | None = Field(
        default=None,
        description="The type of the Secret to create, e.g. Opaque (the default; '' means Opaque).",
    )
    status: OnePasswordItemStatus | None = Field(default=None, description="Set by the operator.")


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


def render_crd() -> dict[str, Any]:
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
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                        },
                        {"name": "Item Version", "type": "integer", "jsonPath": ".status.itemVersion"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated from opsync.crd by `make crds`; do not edit by hand.\n"
    return header + yaml.safe_dump(render_crd(), sort_keys=False, width=120)
