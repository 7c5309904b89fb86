"""A Deployment uses a Secret through any of the pod spec's references, or its item-name annotation."""

from __future__ import annotations

from typing import Any

import pytest

from opsync import workloads


def deployment(
    pod: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations or {}}, "spec": {"template": {"spec": pod or {}}}}


@pytest.mark.parametrize(
    "body",
    [
        deployment({"containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]}]}),
        deployment({"initContainers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]}),
        deployment(
            {
                "volumes": [
                    {"name": "c", "configMap": {"name": "x"}},
                    {"name": "s", "secret": {"secretName": "db"}},
                ]
            }
        ),
        deployment({"volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "db"}}]}}]}),
        deployment(
            annotations={
                "operator.1password.io/item-path": "vaults/v/items/i",
                "operator.1password.io/item-name": "DB",
            }
        ),
    ],
    ids=["env", "init-envFrom", "volume-after-configmap", "projected", "item-name"],
)
def test_each_reference_counts(body: dict[str, Any]) -> None:
    assert workloads.uses_secret(body, "db")


def test_other_secrets_do_not_count() -> None:
    body = deployment(
        {"containers": [{"envFrom": [{"secretRef": {"name": "other"}}]}], "volumes": [{"secret": {}}]}
    )
    assert not workloads.uses_secret(body, "db")


def test_metadata_annotations_win_over_the_pod_template() -> None:
    body = {
        "metadata": {"annotations": {"operator.1password.io/item-path": "vaults/a/items/b", "team": "x"}},
        "spec": {
            "template": {"metadata": {"annotations": {"operator.1password.io/item-path": "vaults/c/items/d"}}}
        },
    }
    assert workloads.deployment_annotations(body) == {"operator.1password.io/item-path": "vaults/a/items/b"}
