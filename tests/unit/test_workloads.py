"""Which workloads use a Secret, whether they want a restart, and the restart record."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from opsync.core import workloads
from opsync.core.mapping import SecretData


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


# -- Every workload kind, every reference ------------------------------------------------------------


def workload(kind: str, pod: dict[str, Any]) -> dict[str, Any]:
    api_version = "argoproj.io/v1alpha1" if kind == "Rollout" else "apps/v1"
    return {"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": {"template": {"spec": pod}}}


REFERENCES: dict[str, dict[str, Any]] = {
    "env": {
        "containers": [{"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]}]
    },
    "envFrom": {
        "containers": [{"envFrom": [{"configMapRef": {"name": "db"}}, {"secretRef": {"name": "db"}}]}]
    },
    "init-env": {"initContainers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "db"}}}]}]},
    "init-envFrom": {"initContainers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]},
    "volume": {"volumes": [{"name": "s", "secret": {"secretName": "db"}}]},
    "projected": {
        "volumes": [
            {
                "name": "p",
                "projected": {"sources": [{"configMap": {"name": "db"}}, {"secret": {"name": "db"}}]},
            }
        ]
    },
}

NOT_REFERENCES: dict[str, dict[str, Any]] = {
    "imagePullSecrets": {"imagePullSecrets": [{"name": "db"}], "containers": [{"name": "a"}]},
    "ephemeralContainers": {"ephemeralContainers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]},
    "configMap-named-db": {"volumes": [{"name": "c", "configMap": {"name": "db"}}]},
    "env-value": {"containers": [{"env": [{"name": "db", "value": "db"}]}]},
    "other-secret": {"containers": [{"envFrom": [{"secretRef": {"name": "db2"}}]}]},
    "empty": {},
}

KINDS = ["Deployment", "StatefulSet", "DaemonSet", "Rollout"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reference", sorted(REFERENCES))
def test_every_kind_uses_a_secret_through_every_reference(kind: str, reference: str) -> None:
    assert workloads.uses_secret(workload(kind, REFERENCES[reference]), "db")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reference", sorted(NOT_REFERENCES))
def test_what_does_not_count_as_using_a_secret(kind: str, reference: str) -> None:
    assert not workloads.uses_secret(workload(kind, NOT_REFERENCES[reference]), "db")


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("apps/v1", "Deployment", workloads.DEPLOYMENT),
        ("apps/v1", "StatefulSet", workloads.STATEFUL_SET),
        ("apps/v1", "DaemonSet", workloads.DAEMON_SET),
        ("argoproj.io/v1alpha1", "Rollout", workloads.ROLLOUT),
        ("batch/v1", "Job", None),
        ("example.com/v1", "Deployment", None),
    ],
)
def test_workload_kind(api_version: str, kind: str, expected: workloads.WorkloadKind | None) -> None:
    assert workloads.workload_kind({"apiVersion": api_version, "kind": kind}) == expected


def test_rollout_kind_is_served_by_argo() -> None:
    assert (workloads.ROLLOUT.group, workloads.ROLLOUT.version, workloads.ROLLOUT.plural) == (
        "argoproj.io",
        "v1alpha1",
        "rollouts",
    )
    assert workloads.DEPLOYMENT.api_version == "apps/v1"


# -- Auto-restart precedence -------------------------------------------------------------------------

KEY = "operator.1password.io/auto-restart"


def ann(value: str | None) -> dict[str, str]:
    return {} if value is None else {KEY: value, "other": "x"}


@pytest.mark.parametrize(
    ("secret", "workload_", "namespace", "default", "expected"),
    [
        # The first level that is set decides.
        ("true", "false", "false", False, workloads.AutoRestart(True, "Secret")),
        ("false", "true", "true", True, workloads.AutoRestart(False, "Secret")),
        (None, "true", "false", False, workloads.AutoRestart(True, "workload")),
        (None, "false", "true", True, workloads.AutoRestart(False, "workload")),
        (None, None, "true", False, workloads.AutoRestart(True, "Namespace")),
        (None, None, "false", True, workloads.AutoRestart(False, "Namespace")),
        (None, None, None, True, workloads.AutoRestart(True, "default")),
        (None, None, None, False, workloads.AutoRestart(False, "default")),
        # Go's ParseBool spellings.
        ("TRUE", None, None, False, workloads.AutoRestart(True, "Secret")),
        ("1", None, None, False, workloads.AutoRestart(True, "Secret")),
        (None, "t", None, False, workloads.AutoRestart(True, "workload")),
        (None, "F", None, True, workloads.AutoRestart(False, "workload")),
        (None, None, "0", True, workloads.AutoRestart(False, "Namespace")),
        # "" is "not set", as in Go.
        ("", "true", None, False, workloads.AutoRestart(True, "workload")),
        ("", "", "", True, workloads.AutoRestart(True, "default")),
        # An invalid value means false, does not fall through, and says where it was.
        ("yes", "true", "true", True, workloads.AutoRestart(False, "Secret", "yes")),
        (None, "sometimes", "true", True, workloads.AutoRestart(False, "workload", "sometimes")),
        (None, None, "on", True, workloads.AutoRestart(False, "Namespace", "on")),
    ],
)
def test_auto_restart_precedence(
    secret: str | None,
    workload_: str | None,
    namespace: str | None,
    default: bool,
    expected: workloads.AutoRestart,
) -> None:
    assert workloads.auto_restart_wanted(ann(secret), ann(workload_), ann(namespace), default) == expected


@pytest.mark.parametrize(
    ("secret", "workload_", "needed"),
    [(None, None, True), ("", "", True), ("true", None, False), (None, "nope", False)],
)
def test_the_namespace_is_needed_only_when_secret_and_workload_leave_it_open(
    secret: str | None, workload_: str | None, needed: bool
) -> None:
    assert workloads.needs_namespace(ann(secret), ann(workload_)) is needed


# -- Fingerprints and the restart record ---------------------------------------------------------------

PASSWORD = b"hunter2"


def test_fingerprint_is_keyed_by_the_salt_and_follows_the_data() -> None:
    data = SecretData({"password": PASSWORD})
    first = workloads.data_fingerprint(data, "uid-1")
    assert len(first) == 16 and all(c in "0123456789abcdef" for c in first)
    assert first == workloads.data_fingerprint(SecretData({"password": PASSWORD}), "uid-1")
    assert first != workloads.data_fingerprint(data, "uid-2")
    assert first != workloads.data_fingerprint(SecretData({"password": b"hunter3"}), "uid-1")
    assert first != workloads.data_fingerprint(SecretData({"passwd": PASSWORD}), "uid-1")


def test_fingerprint_is_not_a_plain_hash_of_the_value() -> None:
    data = SecretData({"password": PASSWORD})
    fingerprint = workloads.data_fingerprint(data, "uid-1")
    assert PASSWORD.decode() not in fingerprint
    plain = {
        hashlib.sha256(PASSWORD).hexdigest()[:16],
        data.digest()[:16],
        hashlib.sha256(data.digest().encode()).hexdigest()[:16],
    }
    assert fingerprint not in plain


@pytest.mark.parametrize(
    ("value", "record"),
    [
        (None, {}),
        ("", {}),
        ("a=1", {"a": "1"}),
        ("b=2,a=1", {"a": "1", "b": "2"}),
        ("a=1,,junk,=x,c=,b=2", {"a": "1", "b": "2"}),
    ],
)
def test_parse_record(value: str | None, record: dict[str, str]) -> None:
    assert workloads.parse_record(value) == record


def test_format_record_sorts_by_secret_name() -> None:
    assert workloads.format_record({"web": "2", "db": "1"}) == "db=1,web=2"
    assert workloads.parse_record(workloads.format_record({"web": "2", "db": "1"})) == {"web": "2", "db": "1"}


NOW = "2026-01-02T03:04:05Z"
LATER = "2026-01-02T04:00:00Z"


def annotated(annotations: dict[str, str]) -> dict[str, Any]:
    body = workload("StatefulSet", REFERENCES["env"])
    body["spec"]["template"]["metadata"] = {"annotations": annotations}
    return body


def apply(body: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    metadata = body["spec"]["template"].setdefault("metadata", {})
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        **patch["spec"]["template"]["metadata"]["annotations"],
    }
    return body


def test_restart_patch_sets_the_official_trigger_and_the_record() -> None:
    patch = workloads.restart_patch(workload("Deployment", {}), {"db": "f1"}, NOW)
    assert patch == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "operator.1password.io/last-restarted": NOW,
                        "opsync.io/restarted-for": "db=f1",
                    }
                }
            }
        }
    }


def test_restart_patch_happens_once_per_fingerprint() -> None:
    body = workload("Deployment", REFERENCES["env"])
    body = apply(body, workloads.restart_patch(body, {"db": "f1"}, NOW) or {})
    assert workloads.restart_patch(body, {"db": "f1"}, LATER) is None
    again = workloads.restart_patch(body, {"db": "f2"}, LATER)
    assert again is not None
    assert again["spec"]["template"]["metadata"]["annotations"] == {
        "operator.1password.io/last-restarted": LATER,
        "opsync.io/restarted-for": "db=f2",
    }


def test_restart_patch_keeps_the_entries_of_other_secrets() -> None:
    body = annotated({"opsync.io/restarted-for": "api=a1,db=f1", "team": "x"})
    assert workloads.restart_patch(body, {"db": "f1", "api": "a1"}, NOW) is None
    assert workloads.restart_patch(body, {"db": "f1"}, NOW) is None
    patch = workloads.restart_patch(body, {"db": "f1", "web": "w1"}, NOW)
    assert patch is not None
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert annotations["opsync.io/restarted-for"] == "api=a1,db=f1,web=w1"
    assert set(annotations) == {"operator.1password.io/last-restarted", "opsync.io/restarted-for"}


def test_restart_patch_with_nothing_changed_is_none() -> None:
    assert workloads.restart_patch(workload("DaemonSet", {}), {}, NOW) is None
