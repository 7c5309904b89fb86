"""The pure rules of connections: references, who may use a cluster connection, the status written."""

from __future__ import annotations

import pytest

from opsync.core import connection as conn
from opsync.core.crd import ConnectionRefSpec, parse_spec
from opsync.sync.reconcile import deployment_target, item_target


def test_a_namespaced_reference_defaults_to_the_items_namespace_and_refuses_another() -> None:
    ref = conn.ref_of(ConnectionRefSpec(name="team"), "team-a")
    assert ref == conn.ConnectionRef(kind=conn.KIND, name="team", namespace="team-a")
    assert ref.label == "team-a/team"
    assert conn.cross_namespace_refusal(ref, "team-a") is None
    other = conn.ref_of(ConnectionRefSpec(name="team", namespace="team-b"), "team-a")
    message = conn.cross_namespace_refusal(other, "team-a")
    assert message is not None and "serves namespace team-b only" in message


def test_a_cluster_reference_has_no_namespace_and_a_label_no_namespace_can_take() -> None:
    ref = conn.ref_of(ConnectionRefSpec(kind=conn.CLUSTER_KIND, name="shared", namespace="x"), "team-a")
    assert ref.namespace is None and ref.label == "cluster:shared"
    assert conn.cross_namespace_refusal(ref, "team-a") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("team", conn.ConnectionRef(kind=conn.KIND, name="team", namespace="ns")),
        ("ClusterOnePasswordConnection/shared", conn.ConnectionRef(kind=conn.CLUSTER_KIND, name="shared")),
    ],
)
def test_the_deployment_annotation(value: str, expected: conn.ConnectionRef) -> None:
    assert conn.parse_annotation(value, "ns") == expected


@pytest.mark.parametrize("value", ["Secret/x", "Team_A", "OnePasswordConnection/"])
def test_a_malformed_annotation_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=conn.CONNECTION_ANNOTATION):
        conn.parse_annotation(value, "ns")


def test_targets_carry_the_connection() -> None:
    body = {
        "metadata": {"name": "db", "namespace": "ns", "uid": "u"},
        "spec": {"itemPath": "vaults/v/items/i", "connectionRef": {"name": "team"}},
    }
    assert item_target(body).connection == conn.ConnectionRef(kind=conn.KIND, name="team", namespace="ns")
    assert item_target({**body, "spec": {"itemPath": "vaults/v/items/i"}}).connection is None
    deployment = {
        "metadata": {
            "name": "app",
            "namespace": "ns",
            "uid": "d",
            "annotations": {
                "operator.1password.io/item-path": "vaults/v/items/i",
                "operator.1password.io/item-name": "app",
                conn.CONNECTION_ANNOTATION: "nope/x",
            },
        }
    }
    target = deployment_target(deployment)
    assert target is not None and target.connection is None
    assert target.spec_error is not None and conn.CONNECTION_ANNOTATION in target.spec_error


def test_the_item_crd_refuses_unknown_reference_fields() -> None:
    spec, error = parse_spec({"itemPath": "vaults/v/items/i", "connectionRef": {"name": "x", "host": "h"}})
    assert spec is None and error is not None and "connectionRef" in error


def selector(**terms: object) -> conn.LabelSelector:
    return conn.LabelSelector.model_validate(terms)


def test_label_selectors() -> None:
    labels = {"team": "a", "tier": "prod"}
    assert conn.selector_matches(selector(), labels)
    assert conn.selector_matches(selector(matchLabels={"team": "a"}), labels)
    assert not conn.selector_matches(selector(matchLabels={"team": "b"}), labels)
    expressions = [
        ({"key": "tier", "operator": "In", "values": ["prod", "stage"]}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["prod"]}, False),
        ({"key": "team", "operator": "Exists"}, True),
        ({"key": "team", "operator": "DoesNotExist"}, False),
        ({"key": "missing", "operator": "In", "values": ["x"]}, False),
        ({"key": "missing", "operator": "NotIn", "values": ["x"]}, True),
    ]
    for term, expected in expressions:
        assert conn.selector_matches(selector(matchExpressions=[term]), labels) is expected, term


def test_who_may_use_a_cluster_connection() -> None:
    spec = conn.ClusterConnectionSpec.model_validate(
        {
            "host": "http://c:8080",
            "tokenSecretRef": {"namespace": "platform", "name": "t"},
            "namespaces": ["named"],
            "namespaceSelector": {"matchLabels": {"connect": "shared"}},
        }
    )
    assert conn.namespace_allowed(spec, "named", None)
    assert not conn.needs_labels(spec, "named")
    assert conn.needs_labels(spec, "other")
    assert conn.namespace_allowed(spec, "other", {"connect": "shared"})
    assert not conn.namespace_allowed(spec, "other", {})
    assert not conn.namespace_allowed(spec, "other", None)
    nobody = spec.model_copy(update={"namespaces": None, "namespaceSelector": None})
    assert not conn.namespace_allowed(nobody, "named", {"connect": "shared"})


def test_the_status_is_written_only_when_more_than_the_clock_moved() -> None:
    first = conn.connection_status(
        None,
        ready=True,
        reason="Connected",
        message="ok",
        generation=1,
        now="2026-01-01T00:00:00Z",
        vaults=[("v2", "B"), ("v1", "A")],
    )
    assert first is not None
    assert first["vaults"] == [{"id": "v1", "name": "A"}, {"id": "v2", "name": "B"}]
    again = dict(
        ready=True, reason="Connected", message="ok", generation=1, vaults=[("v1", "A"), ("v2", "B")]
    )
    assert conn.connection_status(first, now="2026-01-01T00:01:00Z", **again) is None  # type: ignore[arg-type]
    later = conn.connection_status(first, now="2026-01-01T00:06:00Z", **again)  # type: ignore[arg-type]
    assert later is not None and later["lastPollTime"] == "2026-01-01T00:06:00Z"
    failed = conn.connection_status(
        first, ready=False, reason="Unauthorized", message="401", generation=1, now="2026-01-01T00:02:00Z"
    )
    assert failed is not None and failed["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:02:00Z"
    assert "lastPollTime" not in failed and "vaults" not in failed  # a failure keeps the last ones
    assert conn.transition(first, ready=False, reason="Unauthorized")
    assert not conn.transition(first, ready=True, reason="Connected")


def test_the_connection_crds_are_committed_as_generated() -> None:
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "crds" / "connections.yaml"
    assert committed.read_text() == conn.definitions_yaml(), "crds/ is stale: run `make crds`"
