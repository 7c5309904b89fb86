"""The Helm chart, rendered: `helm lint`, then `helm template` with default and other values,
checked rule by rule. No cluster needed (tests/integration/test_helm.py installs it).

The RBAC is pinned to a table of what opsync does (KUBE_CALLS, the requests of each KubeApi
method, recorded, plus what kopf does on its behalf): a new API call without its rule, or a rule nothing uses,
fails here.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import subprocess
import types
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from opsync.core import desired, workloads
from opsync.core.desired import Owner
from opsync.handlers.diffbase import PROGRESS_PREFIX
from opsync.kube import KubeApi
from opsync.tooling import binaries
from tests.unit.kube_calls import CALLS, public_methods

OWNER = Owner("onepassword.com/v1", "OnePasswordItem", "i", "uid-i")
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "opsync"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.not-a-real-token.c2lnbmF0dXJl"

# Every request KubeApi makes, by method: (API group, resource, verb). Recorded, not read from the
# source: test_kube_calls_table_matches_kube_py runs each method against a recording client.
ITEMS = ("onepassword.com", "onepassworditems")
_APPS = [("apps", plural) for plural in ("deployments", "statefulsets", "daemonsets")] + [
    ("argoproj.io", "rollouts")
]
KUBE_CALLS: dict[str, set[tuple[str, str, str]]] = {
    "read_secret": {("", "secrets", "get")},
    "create_secret": {("", "secrets", "create")},
    "replace_secret": {("", "secrets", "update")},
    "set_owner_references": {("", "secrets", "patch")},
    "retain_secret": {("", "secrets", "patch")},
    "clear_rollout_pending": {("", "secrets", "patch")},
    "delete_secret": {("", "secrets", "delete")},
    "post_event": {("", "events", "create"), ("", "events", "patch")},
    "namespace_annotations": {("", "namespaces", "get")},
    "read_lease": {("coordination.k8s.io", "leases", "get")},
    "create_lease": {("coordination.k8s.io", "leases", "create")},
    "replace_lease": {("coordination.k8s.io", "leases", "update")},
    "read_item": {(*ITEMS, "get")},
    "patch_item_status": {("onepassword.com", "onepassworditems/status", "patch")},
    "list_deployments": {("apps", "deployments", "list")},
    "list_workloads": {(group, plural, "list") for group, plural in _APPS},
    "patch_workload": {(group, plural, "patch") for group, plural in _APPS},
    "namespace_labels": {("", "namespaces", "get")},
    "read_connection": {("opsync.io", "onepasswordconnections", "get")},
    "patch_connection_status": {("opsync.io", "onepasswordconnections/status", "patch")},
    "read_cluster_connection": {("opsync.io", "clusteronepasswordconnections", "get")},
    "patch_cluster_connection_status": {("opsync.io", "clusteronepasswordconnections/status", "patch")},
}
CLUSTER_SCOPED = {"read_cluster_connection", "patch_cluster_connection_status"}
"""Calls on cluster-scoped objects: granted by the ClusterRole only (never in per-namespace mode)."""
# What kopf does for opsync: watch (list + watch) what the handlers are registered on, and patch
# its finalizer and progress annotations onto the objects it handles.
KOPF_CALLS = {
    (*ITEMS, "list"),
    (*ITEMS, "watch"),
    (*ITEMS, "patch"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "patch"),
}
# Watching every namespace, kopf also watches CRDs (to notice the OnePasswordItem CRD installed
# while it runs); with exact namespace names opsync turns that scan off.
KOPF_CLUSTER_CALLS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
LEASES = "coordination.k8s.io"


def helm_binary() -> Path:
    found = binaries.find("helm")
    if found is None:
        pytest.skip("no helm binary: run `make bins`")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def set_args(values: dict[str, Any], tmp_path: Path) -> list[str]:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["--values", str(path)]


# What an API server that serves ValidatingAdmissionPolicy (Kubernetes 1.30+) tells helm.
POLICY_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
POLICY_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


@functools.cache
def _render(
    values_yaml: str, api_versions: tuple[str, ...] = (), namespace: str = "opsync-system"
) -> tuple[dict[str, Any], ...]:
    args = ["template", "opsync", str(CHART), "--namespace", namespace]
    args += [arg for version in api_versions for arg in ("--api-versions", version)]
    if values_yaml:
        args += ["--values", "/dev/stdin"]
    result = subprocess.run(
        [str(helm_binary()), *args],
        input=values_yaml,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return list(_render(yaml.safe_dump(values) if values else ""))


def render_for_policy_api(
    values: dict[str, Any] | None = None, namespace: str = "opsync-system"
) -> list[dict[str, Any]]:
    """As rendered for an API server that serves admissionregistration.k8s.io/v1."""
    return list(_render(yaml.safe_dump(values) if values else "", (POLICY_API,), namespace))


def render_fails(values: dict[str, Any]) -> str:
    result = subprocess.run(
        [str(helm_binary()), "template", "opsync", str(CHART), "--values", "/dev/stdin"],
        input=yaml.safe_dump(values),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, f"rendered although it should not:\n{result.stdout[:2000]}"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = of_kind(docs, kind)
    return doc


def container(docs: list[dict[str, Any]], name: str = "operator") -> dict[str, Any]:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    found: dict[str, Any] = next(c for c in spec["containers"] if c["name"] == name)
    return found


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


class _Recorder:
    """Stands in for the kubernetes client's ApiClient: records (HTTP method, path), answers {}."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def param_serialize(self, *, method: str, resource_path: str, **_: Any) -> tuple[str, str]:
        return (method, resource_path)

    def close(self) -> None:
        pass

    def call_api(self, method: str, path: str) -> Any:
        self.requests.append((method, path))
        return types.SimpleNamespace(status=200, read=lambda: b"{}")


def _rule(method: str, path: str) -> tuple[str, str, str]:
    """The RBAC rule a request needs: (API group, resource[/subresource], verb)."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]  # namespaced: drop namespaces/<ns>
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    verb = verbs.get(method) or ("get" if len(rest) > 1 else "list")
    return (group, resource, verb)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def kube_requests() -> dict[str, set[tuple[str, str, str]]]:
    """What each public method of KubeApi asks of the API server, recorded."""
    assert public_methods() == set(CALLS), (
        "a KubeApi method without its entry in tests/unit/kube_calls.py (and in KUBE_CALLS and the chart)"
    )
    found: dict[str, set[tuple[str, str, str]]] = {}
    for name, call in CALLS.items():
        recorder = _Recorder()
        api = KubeApi(cast(Any, recorder))
        try:
            asyncio.run(_awaited(call(api)))
        finally:
            api.close()
        found[name] = {_rule(method, path) for method, path in recorder.requests}
    return found


# -- the chart as a whole -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["onepassworditem.yaml", "connections.yaml"])
def test_chart_crd_is_the_generated_one(name: str) -> None:
    copy = CHART / "crds" / name
    source = REPO / "crds" / name
    assert copy.read_text() == source.read_text(), "helm/opsync/crds/ is stale: run `make chart-crd`"


def test_helm_lint_passes_with_default_and_other_values(tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART))
    other = {
        "operator": {
            "watchNamespace": ["team-a", "team-b"],
            "token": {"value": TOKEN},
            "tls": {"trust": {"secret": "connect-ca"}},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "pdb": {"enabled": True},
        },
    }
    helm("lint", "--strict", str(CHART), *set_args(other, tmp_path))
    helm("lint", "--strict", str(CHART), *set_args({"connectServer": {"enabled": True}}, tmp_path))


def test_kube_calls_table_matches_kube_py() -> None:
    assert kube_requests() == KUBE_CALLS, "kube.py calls the API differently: update KUBE_CALLS and the chart"


# -- RBAC ------------------------------------------------------------------------------------------


def test_cluster_role_grants_exactly_what_opsync_uses() -> None:
    docs = render()
    cluster_role = one(docs, "ClusterRole")
    needed = {call for calls in KUBE_CALLS.values() for call in calls if call[0] != LEASES}
    assert granted(cluster_role["rules"]) == needed | KOPF_CALLS | KOPF_CLUSTER_CALLS
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(docs, "ServiceAccount")["metadata"]["name"],
            "namespace": "opsync-system",
        }
    ]
    assert not of_kind(docs, "RoleBinding")[1:]  # only the leader Lease's


@pytest.mark.parametrize(
    "values",
    [None, {"operator": {"watchNamespace": ["team-a", "team-b"]}}],
    ids=["every-namespace", "watch-namespaces"],
)
def test_no_wildcards_and_no_pod_or_namespace_writes(values: dict[str, Any] | None) -> None:
    docs = render(values)
    rules = [rule for kind in ("ClusterRole", "Role") for doc in of_kind(docs, kind) for rule in doc["rules"]]
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in entry for entry in rule[field]), rule
        assert "nonResourceURLs" not in rule
    triples = granted(rules)
    assert not {
        t for t in triples if t[1] in ("pods", "pods/exec", "pods/eviction", "configmaps", "serviceaccounts")
    }
    assert {t[2] for t in triples if t[1] == "namespaces"} == {"get"}
    assert not {t for t in triples if t[0] == "rbac.authorization.k8s.io"}
    assert not {t for t in triples if t[2] in ("escalate", "bind", "impersonate", "deletecollection")}


def test_watch_namespace_gives_one_role_per_namespace_and_nothing_cluster_wide() -> None:
    docs = render({"operator": {"watchNamespace": ["team-a", "team-b", "team-a"]}})
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(docs, "Role")}
    assert set(roles) == {
        ("team-a", "opsync"),
        ("team-b", "opsync"),
        ("opsync-system", "opsync-leader-election"),
    }
    needed = {
        call
        for name, calls in KUBE_CALLS.items()
        if name not in CLUSTER_SCOPED
        for call in calls
        if call[0] != LEASES
    }
    for namespace in ("team-a", "team-b"):
        rules = roles[(namespace, "opsync")]["rules"]
        assert granted(rules) == needed | KOPF_CALLS  # no CRD watch: opsync turns kopf's scan off
        (namespace_rule,) = [r for r in rules if r["resources"] == ["namespaces"]]
        assert namespace_rule["resourceNames"] == [namespace]  # its own Namespace only
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in of_kind(docs, "RoleBinding")}
    assert bindings == set(roles)
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == "opsync-system"
    assert env(docs)["WATCH_NAMESPACE"] == "team-a,team-b"


def test_leader_election_role_is_limited_to_its_lease() -> None:
    docs = render()
    role = next(r for r in of_kind(docs, "Role") if r["metadata"]["name"] == "opsync-leader-election")
    assert role["metadata"]["namespace"] == "opsync-system"
    by_verbs = {tuple(rule["verbs"]): rule for rule in role["rules"]}
    assert set(by_verbs) == {("create",), ("get", "update")}
    assert "resourceNames" not in by_verbs[("create",)]  # create cannot be limited to a name
    assert by_verbs[("get", "update")]["resourceNames"] == ["opsync-leader"]
    assert all(rule["apiGroups"] == [LEASES] and rule["resources"] == ["leases"] for rule in role["rules"])
    assert env(docs)["OPSYNC_LEASE_NAME"] == "opsync-leader"
    assert env(docs)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_rbac_and_service_account_can_be_left_to_the_user() -> None:
    docs = render(
        {
            "operator": {
                "serviceAccount": {"create": False, "name": "mine"},
                "clusterRole": {"create": False},
                "clusterRoleBinding": {"create": False},
                "roleBinding": {"create": False},
            }
        }
    )
    assert {doc["kind"] for doc in docs} == {"Deployment"}
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# -- the Deployment --------------------------------------------------------------------------------


def test_deployment_defaults() -> None:
    docs = render()
    assert {doc["kind"] for doc in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    }
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "opsync"
    assert container(docs)["image"] == "ghcr.io/opsync/opsync:0.1.0"
    assert "command" not in container(docs)  # the image's entrypoint: opsync run
    assert container(docs)["args"] == [
        "--log-level=info",
        "--metrics-bind-address=:8080",
        "--health-probe-bind-address=:8081",
        "--leader-elect",
    ]
    assert env(docs) == {
        "OP_CONNECT_HOST": "http://onepassword-connect:8080",
        "OP_CONNECT_TOKEN_FILE": "/etc/opsync/connect-token/token",
        "WATCH_NAMESPACE": "",
        "POLLING_INTERVAL": "600",
        "AUTO_RESTART": "false",
        "OPSYNC_LEASE_NAME": "opsync-leader",
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
    }


def test_security_context_is_non_root_and_read_only() -> None:
    docs = render({"connectServer": {"enabled": True}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in pod["containers"] + pod["initContainers"]:
        context = each["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, each["name"]
        assert context["allowPrivilegeEscalation"] is False, each["name"]
        assert context["runAsNonRoot"] is True, each["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, each["name"]
        assert "privileged" not in context
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert not [v for v in volumes.values() if "hostPath" in v]
    assert {"name": "tmp", "mountPath": "/tmp"} in container(docs)["volumeMounts"]


def test_probes_and_metrics_are_wired_to_the_operator_ports() -> None:
    docs = render(
        {
            "operator": {
                "metrics": {"port": 9090, "serviceMonitor": {"enabled": True}},
                "probes": {"port": 9091},
            }
        }
    )
    operator = container(docs)
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}
    assert "--metrics-bind-address=:9090" in operator["args"]
    assert "--health-probe-bind-address=:9091" in operator["args"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    no_probes = render(
        {"operator": {"probes": {"liveness": {"create": False}, "readiness": {"create": False}}}}
    )
    assert "livenessProbe" not in container(no_probes) and "readinessProbe" not in container(no_probes)


def test_values_follow_the_official_names() -> None:
    docs = render(
        {
            "operator": {
                "pollingInterval": 30,
                "autoRestart": True,
                "logLevel": "debug",
                "enableAnnotations": True,
                "allowEmptyValues": True,
                "replicas": 2,
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {}},
                "resources": {"limits": {"memory": "300Mi"}},
                "customEnvVars": [{"name": "OPSYNC_CONNECT_TIMEOUT", "value": 10}],
                "imagePullSecrets": ["registry"],
                "version": "1.2.3",
                "podAnnotations": {"a": "b"},
            },
            "connect": {"host": "https://connect.example:8443"},
        }
    )
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert env(docs)["POLLING_INTERVAL"] == "30"
    assert env(docs)["AUTO_RESTART"] == "true"
    assert env(docs)["OP_CONNECT_HOST"] == "https://connect.example:8443"
    assert env(docs)["OPSYNC_CONNECT_TIMEOUT"] == "10"
    assert {"--log-level=debug", "--enable-annotations", "--allow-empty-values"} <= set(
        container(docs)["args"]
    )
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert container(docs)["resources"]["limits"] == {"memory": "300Mi"}
    assert container(docs)["image"].endswith(":1.2.3")
    assert one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["a"] == "b"


def test_token_comes_from_a_secret_and_never_from_the_deployment() -> None:
    existing = render({"operator": {"token": {"name": "my-token", "key": "connect"}}})
    assert not of_kind(existing, "Secret")
    volumes = {v["name"]: v for v in one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["connect-token"]["secret"] == {
        "secretName": "my-token",
        "items": [{"key": "connect", "path": "token"}],
    }
    mounts = {m["name"]: m for m in container(existing)["volumeMounts"]}
    assert mounts["connect-token"] == {
        "name": "connect-token",
        "mountPath": "/etc/opsync/connect-token",
        "readOnly": True,
    }
    assert env(existing)["OP_CONNECT_TOKEN_FILE"] == "/etc/opsync/connect-token/token"

    created = render({"operator": {"token": {"value": TOKEN}}})
    # Not even a digest of the token reaches an annotation (no checksum/token restart trigger).
    annotations = one(created, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert not any("token" in key for key in annotations)
    secret = one(created, "Secret")
    assert secret["metadata"]["name"] == "onepassword-token"
    assert secret["metadata"]["namespace"] == "opsync-system"
    assert set(secret["data"]) == {"token"}
    for doc in created:
        if doc["kind"] != "Secret":
            assert TOKEN not in yaml.safe_dump(doc), doc["kind"]
    assert "OP_CONNECT_TOKEN" not in env(created)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("onepassword-connect", "http://onepassword-connect:8080"),
        ("connect.secrets.svc:9000", "http://connect.secrets.svc:9000"),
        ("https://connect.example:8443/", "https://connect.example:8443/"),
    ],
)
def test_connect_host_forms(host: str, url: str) -> None:
    assert env(render({"connect": {"host": host}}))["OP_CONNECT_HOST"] == url


def test_tls_trust_secret_becomes_the_connect_ca_bundle() -> None:
    docs = render({"operator": {"tls": {"trust": {"secret": "connect-ca"}}}})
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["connect-ca"]["secret"]["secretName"] == "connect-ca"
    assert volumes["connect-ca"]["secret"]["items"] == [{"key": "tls.crt", "path": "tls.crt"}]
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "connect-ca")
    assert env(docs)["OPSYNC_CONNECT_CA_BUNDLE"] == f"{mount['mountPath']}/tls.crt"
    assert "OPSYNC_CONNECT_CA_BUNDLE" not in env(render())


def test_local_connect_server_runs_beside_the_operator() -> None:
    docs = render({"connectServer": {"enabled": True, "port": 8099}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    server = container(docs, "connect-server")
    assert server["command"][:2] == ["opsync", "connect-server"]
    assert "--host=127.0.0.1" in server["command"] and "--port=8099" in server["command"]
    assert "issue-token --all-vaults" in init["args"][0]
    assert env(docs)["OP_CONNECT_HOST"] == "http://127.0.0.1:8099"
    assert env(docs)["OP_CONNECT_TOKEN_FILE"] == "/var/run/opsync/connect/token"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "connect-token" not in volumes  # no token Secret needed
    assert volumes["connect-seed"]["secret"]["secretName"] == "opsync-connect-data"
    data = one(docs, "Secret")
    assert data["metadata"]["name"] == "opsync-connect-data"
    existing = render({"connectServer": {"enabled": True, "existingSecret": "my-data"}})
    assert not of_kind(existing, "Secret")


def test_pod_disruption_budget() -> None:
    assert not of_kind(render(), "PodDisruptionBudget")
    pdb = one(render({"operator": {"pdb": {"enabled": True}}}), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    pdb = one(render({"operator": {"pdb": {"enabled": True, "minAvailable": "50%"}}}), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in pdb["spec"]
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == one(render(), "Deployment")["spec"]["selector"]["matchLabels"]
    )


def test_standalone_mode_has_no_lease() -> None:
    docs = render({"operator": {"leaderElection": {"enabled": False}}})
    assert "--standalone" in container(docs)["args"]
    assert not of_kind(docs, "Role")
    assert "replicas > 1" in render_fails({"operator": {"replicas": 2, "leaderElection": {"enabled": False}}})


# -- the admission policy --------------------------------------------------------------------------


def test_admission_policy_only_where_the_api_server_serves_it_and_when_enabled() -> None:
    # helm template without --api-versions (and helm lint) knows no ValidatingAdmissionPolicy.
    assert not {doc["kind"] for doc in render()} & POLICY_KINDS
    assert {doc["kind"] for doc in render_for_policy_api()} >= POLICY_KINDS
    off = render_for_policy_api({"admissionPolicy": {"enabled": False}})
    assert not {doc["kind"] for doc in off} & POLICY_KINDS
    # Nothing else depends on it.
    assert [doc for doc in render_for_policy_api() if doc["kind"] not in POLICY_KINDS] == render()


def test_admission_policy_binds_the_operator_service_account_only() -> None:
    docs = render_for_policy_api()
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["metadata"]["name"] == "opsync-opsync-system-workloads"
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConditions"] == [
        {
            "name": "opsync-service-account",
            "expression": 'request.userInfo.username == "system:serviceaccount:opsync-system:opsync"',
        }
    ]
    # UPDATE of the main resources only (a PATCH is an UPDATE): no status or scale subresource.
    rules = spec["matchConstraints"]["resourceRules"]
    assert {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("argoproj.io", "rollouts"),
    }
    assert all(rule["operations"] == ["UPDATE"] for rule in rules)
    # Every kind the operator patches (kube.py's patch_workload) is covered.
    patched = {(group, plural) for group, plural, _ in KUBE_CALLS["patch_workload"]}
    assert patched == {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    (validation,) = spec["validations"]
    assert validation["reason"] == "Forbidden"
    assert validation["expression"] == "size(variables.changes) == 0"


def test_admission_policy_follows_the_service_account_and_release_namespace() -> None:
    docs = render_for_policy_api({"operator": {"serviceAccount": {"create": False, "name": "mine"}}}, "ops")
    policy = one(docs, "ValidatingAdmissionPolicy")
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == 'request.userInfo.username == "system:serviceaccount:ops:mine"'
    # Cluster-scoped: the release namespace is in the name, so releases in two namespaces coexist.
    assert policy["metadata"]["name"] == "opsync-ops-workloads"
    assert one(docs, "ValidatingAdmissionPolicyBinding")["spec"]["policyName"] == "opsync-ops-workloads"


def test_admission_policy_allows_what_the_operator_writes() -> None:
    # The names the CEL allows are the ones the code writes: a renamed annotation fails here.
    policy = one(render_for_policy_api(), "ValidatingAdmissionPolicy")
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["restartAnnotations"] == f"['{desired.LAST_RESTARTED}', '{workloads.RESTARTED_FOR}']"
    assert variables["finalizer"] == f"'{desired.FINALIZER}'"
    assert f"string(k).startsWith('{PROGRESS_PREFIX}/')" in variables["changes"]
    restart = workloads.restart_patch({}, {"s": "0123456789abcdef"}, "2025-01-01T00:00:00Z")
    assert restart is not None
    assert restart["spec"]["template"]["metadata"].keys() == {"annotations"}
    assert set(restart["spec"]["template"]["metadata"]["annotations"]) == {
        desired.LAST_RESTARTED,
        workloads.RESTARTED_FOR,
    }


# -- values.schema.json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"pollingIntervall": 60}}, "pollingIntervall"),
        ({"unknown": True}, "unknown"),
        ({"operator": {"token": {"secret": "x"}}}, "secret"),
        ({"operator": {"pollingInterval": "ten"}}, "pollingInterval"),
        ({"operator": {"pollingInterval": 0}}, "pollingInterval"),
        ({"operator": {"autoRestart": "yes"}}, "autoRestart"),
        ({"operator": {"watchNamespace": "team-a"}}, "watchNamespace"),
        ({"operator": {"watchNamespace": ["team-*"]}}, "watchNamespace"),
        ({"operator": {"logLevel": "verbose"}}, "logLevel"),
        ({"operator": {"replicas": -1}}, "replicas"),
        ({"operator": {"resources": {"limit": {"memory": "1Gi"}}}}, "limit"),
        ({"operator": {"imagePullPolicy": "Sometimes"}}, "imagePullPolicy"),
        ({"operator": {"metrics": {"port": 70000}}}, "port"),
        ({"connectServer": {"enabled": "true"}}, "enabled"),
        ({"admissionPolicy": {"enabled": "yes"}}, "enabled"),
        ({"admissionPolicy": {"failurePolicy": "Ignore"}}, "failurePolicy"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(values: dict[str, Any], complaint: str) -> None:
    stderr = render_fails(values)
    assert "values don't meet the specifications of the schema" in stderr
    assert complaint in stderr


def test_every_default_value_is_in_the_schema() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        assert node.get("additionalProperties") is False or "properties" not in node, path
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{path}.{key} is not in values.schema.json"
            child = node["properties"][key]
            if isinstance(value, dict) and "properties" in (
                schema["definitions"][child["$ref"].rsplit("/", 1)[1]] if "$ref" in child else child
            ):
                walk(value, child, f"{path}.{key}")

    walk(defaults, schema, "values")


def test_the_default_connection_switch() -> None:
    """On by default (no flag: the drop-in); operator.defaultConnection=false passes the flag the
    operator reads (``opsync run --default-connection=false``)."""
    assert not [a for a in container(render())["args"] if a.startswith("--default-connection")]
    args = container(render({"operator": {"defaultConnection": False}}))["args"]
    assert "--default-connection=false" in args
    import argparse

    from opsync.run import register  # the flag exists, and takes the value the chart gives

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    parsed = parser.parse_args(["run", "--default-connection=false"])
    assert parsed.default_connection == "false"


def test_the_chart_ships_both_connection_crds() -> None:
    kinds = {
        doc["spec"]["names"]["kind"]: doc["spec"]["scope"]
        for doc in yaml.safe_load_all((CHART / "crds" / "connections.yaml").read_text())
    }
    assert kinds == {"OnePasswordConnection": "Namespaced", "ClusterOnePasswordConnection": "Cluster"}


def test_the_node_chart_values_run_the_local_image_and_stay_private(tmp_path: Path) -> None:
    """The values ``demo --node`` and the node tests install with: the chart runs the image from
    the node's containerd (never pulled) against the given Connect server, with the extra operator
    values, and the file holding the token is readable by its owner only."""
    from opsync.tooling.nodedemo import write_chart_values

    path = write_chart_values(
        tmp_path / "values.json",
        image_ref="localhost/opsync:0123abcd",
        connect_url="http://10.244.0.1:8080",
        token=TOKEN,
        replicas=2,
        pollingInterval=2,
    )
    assert path.stat().st_mode & 0o777 == 0o600
    rendered = list(_render(path.read_text()))  # JSON is YAML
    pod = container(rendered)
    assert pod["image"] == "localhost/opsync:0123abcd" and pod["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in pod["env"]}
    assert env["OP_CONNECT_HOST"] == "http://10.244.0.1:8080" and env["POLLING_INTERVAL"] == "2"
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    token = next(o for o in rendered if o["kind"] == "Secret")
    assert base64.b64decode(token["data"]["token"]).decode() == TOKEN
