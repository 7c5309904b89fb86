"""The CRD in crds/ is generated from the models, and the models accept the official manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from opsync.core import crd

REPO = Path(__file__).resolve().parents[2]


def test_committed_crd_matches_the_models() -> None:
    committed = (REPO / "crds" / "onepassworditem.yaml").read_text()
    assert committed == crd.definition_yaml(), "crds/ is stale: run `make crds`"


def test_official_operator_manifest_parses() -> None:
    manifest = yaml.safe_load(
        """
        apiVersion: onepassword.com/v1
        kind: OnePasswordItem
        metadata:
          name: db
        type: kubernetes.io/basic-auth
        spec:
          itemPath: "vaults/Kubernetes Secrets/items/db credentials"
        """
    )
    item = crd.OnePasswordItem.model_validate(manifest)
    assert item.spec is not None
    assert item.spec.itemPath == "vaults/Kubernetes Secrets/items/db credentials"
    assert item.type == "kubernetes.io/basic-auth"


@pytest.mark.parametrize(
    "path",
    ["Kubernetes/db", "vaults/k/items/", "vaults//items/x", "vaults/a/items/b/c", "vault/a/items/b"],
)
def test_malformed_item_paths_are_refused_with_a_readable_message(path: str) -> None:
    with pytest.raises(ValidationError) as refused:
        crd.OnePasswordItemSpec.model_validate({"itemPath": path})
    assert crd.ITEM_PATH_HELP in str(refused.value)
    assert path not in str(refused.value)  # hide_input_in_errors


def test_schema_is_structural() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert not {"$ref", "anyOf", "$defs", "title"} & node.keys(), node
            if "properties" in node:
                assert node.get("type") == "object"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd.openapi_schema())


def test_placement_survives_a_spec_that_does_not_parse() -> None:
    raw = {
        "itemPath": "vaults/a/items/b",
        "secretName": "kept",
        "deletionPolicy": "Retain",
        "template": {"stringData": {"bad key": "x"}},
    }
    spec, error = crd.parse_spec(raw)
    assert spec is None and error is not None and "bad key" in error
    placement = crd.parse_placement(raw)
    assert (placement.secretName, placement.deletionPolicy) == ("kept", "Retain")
    assert crd.parse_placement({"secretName": "Not Valid", "deletionPolicy": "Never"}).secretName is None
