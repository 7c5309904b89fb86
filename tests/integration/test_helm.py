"""The Helm chart against the real API server: install it, then run opsync *as the chart's
ServiceAccount* and check that it syncs end to end and can do nothing else.

There is no kubelet, so the chart's pod never runs. The operator runs as a local process
instead, configured exactly as the rendered Deployment configures its container (its args and
env), with a kubeconfig holding a token for the chart's ServiceAccount from the TokenRequest API.
So every request it makes is authorised by the chart's RBAC and nothing else: a missing rule
shows up as a 403 in its log (which must have none), an extra one is caught by the forbidden
checks below and by the rule-by-rule assertions in tests/unit/test_helm_values.py.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.core import crd, desired, workloads
from opsync.tooling import binaries
from opsync.tooling.controlplane import free_port
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess
from tests.conftest import REPO, Cluster
from tests.integration.helpers import (
    CHILDREN,
    VAULT,
    eventually,
    install_rollout_crd,
    make_namespace,
    new_item,
    pod_spec,
    set_field,
    workload,
)

CHART = REPO / "helm" / "opsync"
LAST_RESTARTED = "operator.1password.io/last-restarted"
POLICY_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
POLICY_MESSAGE = (
    "opsync's ServiceAccount may change only the pod template's restart annotations "
    "(operator.1password.io/last-restarted, opsync.io/restarted-for) and its finalizer "
    "onepassword.com/finalizer.secret; this request also changes "
)
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def helm_binary() -> Path:
    found = binaries.find("helm")
    if found is None:
        pytest.skip("no helm binary: run `make bins`")
    return found


def run_helm(*args: str, kubeconfig: Path | None, home: Path) -> str:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [str(helm_binary()), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{result.stderr}"
    return result.stdout


def service_account_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    """A kubeconfig for the same cluster (server, CA) that authenticates with ``token`` only."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context_name = admin["current-context"]
    context = next(c["context"] for c in admin["contexts"] if c["name"] == context_name)
    cluster_entry = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "opsync-sa",
        "clusters": [cluster_entry],
        "users": [{"name": "opsync-sa", "user": {"token": token}}],
        "contexts": [
            {"name": "opsync-sa", "context": {"cluster": cluster_entry["name"], "user": "opsync-sa"}}
        ],
    }
    path.write_text(json.dumps(kubeconfig))
    path.chmod(0o600)
    return path


def request_token(api_client: client.ApiClient, namespace: str, service_account: str) -> str:
    """A token for the ServiceAccount from the TokenRequest API (no token controller needed)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    response = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        service_account, namespace, request
    )
    token: str = response.status.token
    return token


def status_of(call: Callable[[], object]) -> int:
    """The HTTP status of a kubernetes client call: 200 when it succeeds."""
    try:
        call()
    except client.ApiException as exc:
        return int(exc.status)
    return 200


def can_i(
    api: client.ApiClient,
    verb: str,
    group: str,
    resource: str,
    namespace: str | None,
    *,
    name: str | None = None,
) -> bool:
    """A SelfSubjectAccessReview: whether the API server would allow this request."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, namespace=namespace, name=name
            )
        )
    )
    answer = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


@dataclass
class Release:
    name: str
    namespace: str
    manifest: list[dict[str, Any]]
    kubeconfig: Path
    """Authenticates as the release's ServiceAccount."""
    api: client.ApiClient
    """The same, as a client."""

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.manifest if doc["kind"] == kind]


def install(
    cluster: Cluster,
    api_client: client.ApiClient,
    home: Path,
    *,
    name: str,
    values: dict[str, Any],
) -> Release:
    """``helm install`` into a new namespace; the ServiceAccount's kubeconfig and client."""
    namespace = make_namespace(api_client, "helm-rel-")
    values_file = home / f"{name}-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    install_args = ("install", name, str(CHART), "--namespace", namespace, "--values", str(values_file))
    run_helm(*install_args, kubeconfig=cluster.kubeconfig, home=home)
    manifest_text = run_helm(
        "get", "manifest", name, "--namespace", namespace, kubeconfig=cluster.kubeconfig, home=home
    )
    manifest = [doc for doc in yaml.safe_load_all(manifest_text) if doc]
    account = next(doc for doc in manifest if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    token = request_token(api_client, namespace, account)
    kubeconfig = service_account_kubeconfig(cluster, token, home / f"{name}-kubeconfig")
    sa_api = config.new_client_from_config(config_file=str(kubeconfig))
    return Release(name, namespace, manifest, kubeconfig, sa_api)


def upgrade(cluster: Cluster, home: Path, release: Release, *set_values: str) -> list[dict[str, Any]]:
    """``helm upgrade --reuse-values --set ...`` of ``release``; the new manifest."""
    where = ("--namespace", release.namespace)
    sets = [arg for value in set_values for arg in ("--set", value)]
    upgrade_args = ("upgrade", release.name, str(CHART), *where, "--reuse-values", *sets)
    run_helm(*upgrade_args, kubeconfig=cluster.kubeconfig, home=home)
    manifest = run_helm("get", "manifest", release.name, *where, kubeconfig=cluster.kubeconfig, home=home)
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def operator_command(release: Release, token_file: Path) -> tuple[list[str], dict[str, str]]:
    """The Deployment's container as a local process: its args (but the listen addresses, which
    the harness sets to local ports) and env, with the token file where the pod would have it."""
    deployment = release.objects("Deployment")[0]
    container = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    )
    downward = {"metadata.namespace": release.namespace, "metadata.name": f"{release.name}-test-pod"}
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    assert env["OP_CONNECT_TOKEN_FILE"].startswith("/etc/opsync/connect-token/")
    env["OP_CONNECT_TOKEN_FILE"] = str(token_file)
    listen = ("--metrics-bind-address", "--health-probe-bind-address")
    args = [arg for arg in container["args"] if arg.split("=", 1)[0] not in listen]
    assert len(args) == len(container["args"]) - len(listen)
    return args, {**env, "KUBECONFIG": str(release.kubeconfig)}


# -- the namespaced release and its operator ------------------------------------------------------


@dataclass
class Namespaced:
    release: Release
    watched: tuple[str, str]
    unwatched: str
    operator: OperatorProcess


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    helm_binary()
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="module")
def namespaced(
    cluster: Cluster,
    api_client: client.ApiClient,
    crds_installed: None,
    connect_server: ConnectServerProcess,
    helm_home: Path,
) -> Iterator[Namespaced]:
    watched = (make_namespace(api_client, "helm-a-"), make_namespace(api_client, "helm-b-"))
    unwatched = make_namespace(api_client, "helm-x-")
    release = install(
        cluster,
        api_client,
        helm_home,
        name="opsync",
        values={
            "connect": {"host": connect_server.url},
            "operator": {
                "watchNamespace": list(watched),
                "token": {"name": "connect-token", "key": "token", "value": connect_server.token},
                "logLevel": "debug",
                "pollingInterval": 2,
            },
        },
    )
    # The token as the pod would see it: the Secret the chart made, mounted as a file.
    secret = client.CoreV1Api(api_client).read_namespaced_secret("connect-token", release.namespace)
    token_file = helm_home / "connect-token"
    token_file.write_bytes(base64.b64decode(secret.data["token"]))
    args, env = operator_command(release, token_file)
    operator = OperatorProcess.start(
        CHILDREN, log=helm_home / "operator.log", settings=env, args=args, log_level=None, health=True
    )
    try:
        for namespace in watched:
            started = f"Starting the watch-stream for onepassworditems.v1.onepassword.com in {namespace!r}"
            assert operator.wait_log(started), operator.logs()[-4000:]
        yield Namespaced(release, watched, unwatched, operator)
    finally:
        operator.stop()
        release.api.close()
        for namespace in (*watched, unwatched):
            client.CoreV1Api(api_client).delete_namespace(namespace)


async def test_helm_install_renders_a_namespaced_release(namespaced: Namespaced) -> None:
    release = namespaced.release
    assert not release.objects("ClusterRole") and not release.objects("ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in release.objects("Role")}
    assert {namespace for namespace, _ in roles} == {*namespaced.watched, release.namespace}
    deployment = release.objects("Deployment")[0]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "OP_CONNECT_TOKEN" not in env  # the token is a mounted file
    assert env["WATCH_NAMESPACE"]["value"] == ",".join(namespaced.watched)
    # The API server serves admissionregistration.k8s.io/v1: helm rendered the policy, for this
    # release's ServiceAccount only.
    (policy,) = release.objects("ValidatingAdmissionPolicy")
    (binding,) = release.objects("ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    account = release.objects("ServiceAccount")[0]["metadata"]["name"]
    (condition,) = policy["spec"]["matchConditions"]
    username = f"system:serviceaccount:{release.namespace}:{account}"
    assert condition["expression"] == f'request.userInfo.username == "{username}"'


async def test_operator_with_the_chart_service_account_syncs_items(
    namespaced: Namespaced, kube: Kube, connect: ConnectClient
) -> None:
    title = f"helm-{uuid.uuid4().hex[:8]}"
    await new_item(connect, title=title, username="helm", password="from-the-chart")
    expected = {"username": b"helm", "password": b"from-the-chart"}
    for namespace in namespaced.watched:
        kube.create_item(namespace, "synced", f"vaults/{VAULT}/items/{title}")
    for namespace in namespaced.watched:
        assert await eventually(lambda ns=namespace: kube.secret_data(ns, "synced"), within=60) == expected
        ready = await eventually(lambda ns=namespace: kube.ready(ns, "synced"))
        assert ready["status"] == "True", ready
        assert await eventually(
            lambda ns=namespace: [e for e in kube.events(ns, "synced") if e.reason == "SecretSynced"]
        )
    # Drift repair (kopf's watch of managed Secrets), then deletion (finalizer, Secret delete).
    first, second = namespaced.watched
    kube.core.patch_namespaced_secret("synced", first, {"data": {"password": "ZWRpdGVk"}})
    assert await eventually(lambda: kube.secret_data(first, "synced") == expected, within=30)
    kube.delete_item(second, "synced")
    assert await eventually(lambda: kube.secret(second, "synced") is None, within=30)
    # Leader election ran on the chart's Lease, in the release namespace.
    lease = client.CoordinationV1Api(namespaced.release.api).read_namespaced_lease(
        f"{namespaced.release.name}-leader", namespaced.release.namespace
    )
    assert lease.spec.holder_identity.startswith(f"{namespaced.release.name}-test-pod")


async def test_annotation_mode_and_rollout_restarts_with_the_chart_rbac(
    namespaced: Namespaced, kube: Kube, connect: ConnectClient
) -> None:
    namespace = namespaced.watched[0]
    title = f"helm-rotating-{uuid.uuid4().hex[:8]}"
    item = await new_item(connect, title=title, password="one")
    path = f"vaults/{VAULT}/items/{title}"
    # Annotation mode: kopf patches its finalizer onto the Deployment; opsync creates the Secret.
    annotated = {"operator.1password.io/item-path": path, "operator.1password.io/item-name": "annotated"}
    kube.apps.create_namespaced_deployment(
        namespace, workload("Deployment", "annotated", pod_spec(), annotated)
    )
    assert await eventually(lambda: kube.secret_data(namespace, "annotated"), within=60) == {
        "password": b"one"
    }
    deployment = kube.apps.read_namespaced_deployment("annotated", namespace)
    assert deployment.metadata.finalizers, "kopf did not put its finalizer on the Deployment"
    # Rollout restarts: one workload of each apps kind uses the item's Secret.
    kube.create_item(namespace, "rotating", path, annotations={"operator.1password.io/auto-restart": "true"})
    assert await eventually(lambda: kube.secret_data(namespace, "rotating"), within=60) == {
        "password": b"one"
    }
    workloads = {
        kind: workload(kind, f"uses-{kind.lower()}", pod_spec("rotating", "envFrom"))
        for kind in ("Deployment", "StatefulSet", "DaemonSet")
    }
    kube.apps.create_namespaced_deployment(namespace, workloads["Deployment"])
    kube.apps.create_namespaced_stateful_set(namespace, workloads["StatefulSet"])
    kube.apps.create_namespaced_daemon_set(namespace, workloads["DaemonSet"])
    await set_field(connect, item, "password", "two")
    assert await eventually(
        lambda: kube.secret_data(namespace, "rotating") == {"password": b"two"}, within=60
    )

    def restarted() -> list[str]:
        readers = {
            "Deployment": kube.apps.read_namespaced_deployment,
            "StatefulSet": kube.apps.read_namespaced_stateful_set,
            "DaemonSet": kube.apps.read_namespaced_daemon_set,
        }
        done = []
        for kind, read in readers.items():
            template = read(f"uses-{kind.lower()}", namespace).spec.template
            if LAST_RESTARTED in (template.metadata.annotations or {}):
                done.append(kind)
        return done if len(done) == len(readers) else []

    assert await eventually(restarted, within=30)
    # The annotated Deployment's Secret follows at the next poll too.
    assert await eventually(
        lambda: kube.secret_data(namespace, "annotated") == {"password": b"two"}, within=30
    )


async def test_the_operator_removes_its_finalizer_through_the_admission_policy(
    namespaced: Namespaced, kube: Kube, connect: ConnectClient
) -> None:
    # kopf takes its finalizer off a Deployment being deleted: an UPDATE of a terminating object,
    # made as the chart's ServiceAccount, which the policy must let through.
    namespace = namespaced.watched[1]
    title = f"helm-leaving-{uuid.uuid4().hex[:8]}"
    await new_item(connect, title=title, password="bye")
    annotations = {desired.ITEM_PATH: f"vaults/{VAULT}/items/{title}", desired.ITEM_NAME: "leaving"}
    kube.apps.create_namespaced_deployment(
        namespace, workload("Deployment", "leaving", pod_spec(), annotations)
    )
    assert await eventually(lambda: kube.secret_data(namespace, "leaving"), within=60) == {"password": b"bye"}

    def finalizers() -> list[str]:
        return kube.apps.read_namespaced_deployment("leaving", namespace).metadata.finalizers or []

    assert await eventually(lambda: desired.FINALIZER in finalizers())
    kube.apps.delete_namespaced_deployment("leaving", namespace)
    read = functools.partial(kube.apps.read_namespaced_deployment, "leaving", namespace)
    assert await eventually(lambda: status_of(read) == 404, within=30)
    assert await eventually(lambda: kube.secret(namespace, "leaving") is None, within=30)


async def test_no_permission_is_missing(namespaced: Namespaced) -> None:
    # Runs after the tests above: every kind of request they caused is in the log.
    log = namespaced.operator.logs()
    problems = [
        line
        for line in log.splitlines()
        if " 403" in line or "Forbidden" in line or "Not enough permissions" in line
    ]
    assert not problems, "\n".join(problems[:20])


async def test_everything_outside_the_role_is_forbidden(namespaced: Namespaced) -> None:
    core = client.CoreV1Api(namespaced.release.api)
    apps = client.AppsV1Api(namespaced.release.api)
    rbac = client.RbacAuthorizationV1Api(namespaced.release.api)
    watched, unwatched = namespaced.watched[0], namespaced.unwatched
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="not-allowed"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )
    forbidden = {
        "create a pod in a watched namespace": lambda: core.create_namespaced_pod(watched, pod),
        "list pods in a watched namespace": lambda: core.list_namespaced_pod(watched),
        "read a Secret in an unwatched namespace": lambda: core.read_namespaced_secret("x", unwatched),
        "list Secrets in an unwatched namespace": lambda: core.list_namespaced_secret(unwatched),
        "list Secrets cluster-wide": lambda: core.list_secret_for_all_namespaces(),
        "read its own token Secret": lambda: core.read_namespaced_secret(
            "connect-token", namespaced.release.namespace
        ),
        "list namespaces": lambda: core.list_namespace(),
        "read an unwatched Namespace": lambda: core.read_namespace(unwatched),
        "delete a watched Namespace": lambda: core.delete_namespace(watched),
        "create a Deployment": lambda: apps.create_namespaced_deployment(
            watched, workload("Deployment", "not-allowed", pod_spec())
        ),
        "delete a Deployment": lambda: apps.delete_namespaced_deployment("annotated", watched),
        "update a Deployment": lambda: apps.replace_namespaced_deployment(
            "annotated", watched, workload("Deployment", "annotated", pod_spec())
        ),
        "list ConfigMaps": lambda: core.list_namespaced_config_map(watched),
        "create a Role": lambda: rbac.create_namespaced_role(
            watched, client.V1Role(metadata=client.V1ObjectMeta(name="escalate"), rules=[])
        ),
        "list ClusterRoles": lambda: rbac.list_cluster_role(),
    }
    statuses = {what: status_of(call) for what, call in forbidden.items()}
    assert statuses == dict.fromkeys(forbidden, 403)
    # What it needs still works with the same token.
    assert status_of(lambda: core.list_namespaced_secret(watched)) == 200
    assert status_of(lambda: core.read_namespace(watched)) == 200
    # Verbs the tests above do not exercise, asked of the API server's authorizer directly.
    can = functools.partial(can_i, namespaced.release.api)
    assert can("list", "argoproj.io", "rollouts", watched)
    assert can("patch", "argoproj.io", "rollouts", watched)
    assert can("delete", "", "secrets", watched)
    assert not can("get", "apps", "deployments", watched)  # never read one by one
    assert not can("update", "apps", "deployments", watched)
    assert not can("create", "onepassword.com", "onepassworditems", watched)
    assert not can("delete", "onepassword.com", "onepassworditems", watched)
    assert not can("update", "onepassword.com", "onepassworditems", watched)
    assert can("patch", "", "events", watched)  # the same Event again raises its count
    assert not can("update", "", "events", watched)
    assert not can("delete", "", "events", watched)
    assert not can("delete", "coordination.k8s.io", "leases", namespaced.release.namespace)
    assert not can("get", "coordination.k8s.io", "leases", namespaced.release.namespace, name="other")
    assert not can("create", "coordination.k8s.io", "leases", watched)


# -- the admission policy: the chart's ServiceAccount may only restart workloads -------------------


@dataclass(frozen=True)
class Probe:
    """A PATCH of one workload: its kind and name, the patch and its content type."""

    kind: str
    name: str
    body: Any
    content_type: str


def patch_as(
    api: client.ApiClient, namespace: str, probe: Probe, *, dry_run: bool = False
) -> tuple[int, str]:
    """Send ``probe`` with ``api`` (a dry run: admission runs, nothing is stored): the HTTP status
    and the API server's message ("" when it succeeded)."""
    apps = client.AppsV1Api(api)
    patches = {
        "Deployment": apps.patch_namespaced_deployment,
        "StatefulSet": apps.patch_namespaced_stateful_set,
        "DaemonSet": apps.patch_namespaced_daemon_set,
    }
    dry = "All" if dry_run else None
    try:
        if probe.kind == "Rollout":
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                "argoproj.io", "v1alpha1", namespace, "rollouts", probe.name, probe.body,
                dry_run=dry, _content_type=probe.content_type,
            )  # fmt: skip
        else:
            patches[probe.kind](
                probe.name, namespace, probe.body, dry_run=dry, _content_type=probe.content_type
            )
    except client.ApiException as exc:
        message: str = json.loads(exc.body or "{}").get("message", "")
        return int(exc.status), message
    return 200, ""


def container_patch(**fields: Any) -> dict[str, Any]:
    """A strategic merge patch of the container ``app`` (pod_spec's)."""
    return {"spec": {"template": {"spec": {"containers": [{"name": "app", **fields}]}}}}


def restart_patch() -> dict[str, Any]:
    """The patch opsync sends to restart a workload (opsync.core.workloads.restart_patch)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    patch = workloads.restart_patch({}, {f"secret-{uuid.uuid4().hex[:6]}": "0123456789abcdef"}, now)
    assert patch is not None
    return patch


def restart_probe(kind: str) -> Probe:
    # As kube.py sends it: a strategic merge patch, a JSON merge patch for Argo Rollouts.
    return Probe(kind, "guarded", restart_patch(), MERGE if kind == "Rollout" else STRATEGIC)


def denied(kind: str, body: Any, changed: str, content_type: str = STRATEGIC) -> tuple[Probe, str]:
    """A PATCH of the workload ``guarded`` and what the policy's message says it changes."""
    return Probe(kind, "guarded", body, content_type), changed


EVIL = "evil.example/miner:1"
TEMPLATE_SPEC = "spec.template.spec"
SERVICE_ACCOUNT = {"spec": {"template": {"spec": {"serviceAccountName": "deployer"}}}}
DENIED: dict[str, tuple[Probe, str]] = {
    "a Deployment's image": denied("Deployment", container_patch(image=EVIL), TEMPLATE_SPEC),
    "a Deployment's image, as a JSON merge patch": denied(
        "Deployment", container_patch(image=EVIL), TEMPLATE_SPEC, MERGE
    ),
    "a Deployment's command": denied(
        "Deployment", container_patch(command=["sh", "-c", "id"]), TEMPLATE_SPEC
    ),
    "a Deployment's serviceAccountName": denied("Deployment", SERVICE_ACCOUNT, TEMPLATE_SPEC),
    "a Deployment's image beside the restart annotations": denied(
        "Deployment",
        {
            "spec": {
                "template": {
                    **restart_patch()["spec"]["template"],
                    **container_patch(image=EVIL)["spec"]["template"],
                }
            }
        },
        TEMPLATE_SPEC,
    ),
    "a Deployment's replicas": denied("Deployment", {"spec": {"replicas": 5}}, "spec.replicas"),
    "a Deployment's labels": denied("Deployment", {"metadata": {"labels": {"team": "x"}}}, "metadata.labels"),
    "another annotation of a Deployment": denied(
        "Deployment",
        {"metadata": {"annotations": {"example.com/x": "y"}}},
        "metadata.annotations[example.com/x]",
    ),
    "another pod template annotation": denied(
        "Deployment",
        {"spec": {"template": {"metadata": {"annotations": {"example.com/x": "y"}}}}},
        "spec.template.metadata.annotations[example.com/x]",
    ),
    "a pod template label": denied(
        "Deployment",
        {"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}},
        "spec.template.metadata.labels",
    ),
    "a StatefulSet's image": denied("StatefulSet", container_patch(image=EVIL), TEMPLATE_SPEC),
    "another finalizer": denied(
        "StatefulSet",
        [{"op": "add", "path": "/metadata/finalizers", "value": [desired.FINALIZER, "example.com/other"]}],
        "metadata.finalizers",
        JSON_PATCH,
    ),
    "kopf's progress annotation on a StatefulSet (kopf handles Deployments only)": denied(
        "StatefulSet",
        {"metadata": {"annotations": {"opsync.io/x": "{}"}}},
        "metadata.annotations[opsync.io/x]",
    ),
    "a DaemonSet's serviceAccountName": denied("DaemonSet", SERVICE_ACCOUNT, TEMPLATE_SPEC),
    "a DaemonSet's updateStrategy": denied(
        "DaemonSet",
        {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}},
        "spec.updateStrategy",
    ),
    # Custom resources take no strategic merge patch: the container list is replaced.
    "an Argo Rollout's image": denied("Rollout", container_patch(image=EVIL), TEMPLATE_SPEC, MERGE),
}


def template_annotations_of(api: client.ApiClient, namespace: str, kind: str) -> dict[str, str]:
    apps = client.AppsV1Api(api)
    if kind == "Rollout":
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "rollouts", "guarded"
        )
        return workloads.template_annotations(body)
    reads = {
        "Deployment": apps.read_namespaced_deployment,
        "StatefulSet": apps.read_namespaced_stateful_set,
        "DaemonSet": apps.read_namespaced_daemon_set,
    }
    return dict(reads[kind]("guarded", namespace).spec.template.metadata.annotations or {})


async def test_admission_policy_lets_the_service_account_only_restart_workloads(
    namespaced: Namespaced, cluster: Cluster, api_client: client.ApiClient, helm_home: Path
) -> None:
    release, namespace = namespaced.release, namespaced.watched[1]
    apps = client.AppsV1Api(api_client)
    install_rollout_crd(api_client)
    kinds = ("Deployment", "StatefulSet", "DaemonSet", "Rollout")
    bodies = {kind: workload(kind, "guarded", pod_spec()) for kind in kinds}
    apps.create_namespaced_deployment(namespace, bodies["Deployment"])
    apps.create_namespaced_stateful_set(namespace, bodies["StatefulSet"])
    apps.create_namespaced_daemon_set(namespace, bodies["DaemonSet"])
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "rollouts", bodies["Rollout"]
    )
    as_opsync = functools.partial(patch_as, release.api, namespace)
    # The API server applies a new policy within moments: wait for it (a dry run stores nothing).
    first = DENIED["a Deployment's image"][0]
    assert await eventually(lambda: as_opsync(first, dry_run=True)[0] == 403, within=30)

    # Denied, each with the policy's message naming what else it changes.
    denial = f"ValidatingAdmissionPolicy '{policy_name(release)}' with binding '{policy_name(release)}' denied request: "
    outcomes = {what: as_opsync(probe) for what, (probe, _) in DENIED.items()}
    assert {what: (status, message.partition(denial)[2]) for what, (status, message) in outcomes.items()} == {
        what: (403, POLICY_MESSAGE + changed) for what, (_, changed) in DENIED.items()
    }

    # Allowed: a restart of each kind, as opsync sends it, twice (the annotations added, then
    # changed). A DaemonSet's restart also makes the API server bump its template generation.
    generation = "deprecated.daemonset.template.generation"
    ds_generation = apps.read_namespaced_daemon_set("guarded", namespace).metadata.annotations[generation]
    for _ in range(2):
        for kind in kinds:
            probe = restart_probe(kind)
            assert as_opsync(probe) == (200, ""), kind
            expected = probe.body["spec"]["template"]["metadata"]["annotations"]
            assert template_annotations_of(api_client, namespace, kind) == expected, kind
    daemon_set = apps.read_namespaced_daemon_set("guarded", namespace)
    assert int(daemon_set.metadata.annotations[generation]) == int(ds_generation) + 2
    # Allowed: the finalizer on and off (JSON patches, as kopf sends them; on a StatefulSet, which
    # the running operator does not watch, so kopf does not take it off meanwhile) ...
    stateful_set = functools.partial(apps.read_namespaced_stateful_set, "guarded", namespace)
    add = [{"op": "add", "path": "/metadata/finalizers", "value": [desired.FINALIZER]}]
    assert as_opsync(Probe("StatefulSet", "guarded", add, JSON_PATCH)) == (200, "")
    assert stateful_set().metadata.finalizers == [desired.FINALIZER]
    remove = [{"op": "remove", "path": "/metadata/finalizers/0"}]
    assert as_opsync(Probe("StatefulSet", "guarded", remove, JSON_PATCH)) == (200, "")
    assert not stateful_set().metadata.finalizers
    # ... and kopf's progress annotations on a Deployment (written while a handler retries).
    progress = "opsync.io/opsync.handlers.deployments.sync_deployment"
    for value in ('{"retries":1}', None):
        body = {"metadata": {"annotations": {progress: value}}}
        assert as_opsync(Probe("Deployment", "guarded", body, MERGE)) == (200, ""), value
    deployment = functools.partial(apps.read_namespaced_deployment, "guarded", namespace)
    # The policy is for opsync's ServiceAccount only: the admin changes the image.
    image = Probe("Deployment", "guarded", container_patch(image="registry.invalid/app:2"), STRATEGIC)
    assert patch_as(api_client, namespace, image) == (200, "")
    assert deployment().spec.template.spec.containers[0].image == "registry.invalid/app:2"

    # Without the policy, every denied request would have passed: RBAC allows them all.
    try:
        manifest = upgrade(cluster, helm_home, release, "admissionPolicy.enabled=false")
        assert not {doc["kind"] for doc in manifest} & POLICY_KINDS
        assert await eventually(lambda: as_opsync(first, dry_run=True) == (200, ""), within=30)
        without = {what: as_opsync(probe, dry_run=True) for what, (probe, _) in DENIED.items()}
        assert without == dict.fromkeys(DENIED, (200, ""))
    finally:
        manifest = upgrade(cluster, helm_home, release, "admissionPolicy.enabled=true")
    assert {doc["kind"] for doc in manifest} >= POLICY_KINDS
    assert await eventually(lambda: as_opsync(first, dry_run=True)[0] == 403, within=30)


def policy_name(release: Release) -> str:
    (policy,) = release.objects("ValidatingAdmissionPolicy")
    name: str = policy["metadata"]["name"]
    return name


# -- every-namespace mode, with the optional objects ---------------------------------------------


async def test_cluster_wide_release_with_optional_objects(
    cluster: Cluster, api_client: client.ApiClient, crds_installed: None, helm_home: Path
) -> None:
    name = f"cw{uuid.uuid4().hex[:6]}"
    release = install(
        cluster,
        api_client,
        helm_home,
        name=name,
        values={
            "operator": {
                "replicas": 2,
                "metrics": {"service": {"enabled": True}},
                "pdb": {"enabled": True},
            },
            "connectServer": {"enabled": True},
        },
    )
    other = make_namespace(api_client, "helm-y-")
    try:
        kinds = {doc["kind"] for doc in release.manifest}
        assert {"ClusterRole", "ClusterRoleBinding", "Service", "PodDisruptionBudget", "Deployment"} <= kinds
        assert [s["metadata"]["name"] for s in release.objects("Secret")] == [f"{name}-opsync-connect-data"]
        core = client.CoreV1Api(release.api)
        custom = client.CustomObjectsApi(release.api)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name="not-allowed"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        )
        item = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": "x"}}
        calls = {
            "list Secrets cluster-wide": (200, lambda: core.list_secret_for_all_namespaces()),
            "read any Namespace": (200, lambda: core.read_namespace(other)),
            "list OnePasswordItems": (
                200,
                lambda: custom.list_namespaced_custom_object(crd.GROUP, crd.VERSION, other, crd.PLURAL),
            ),
            "create a pod": (403, lambda: core.create_namespaced_pod(other, pod)),
            "list namespaces": (403, lambda: core.list_namespace()),
            "delete a Namespace": (403, lambda: core.delete_namespace(other)),
            "label a Namespace": (
                403,
                lambda: core.patch_namespace(other, {"metadata": {"labels": {"x": "y"}}}),
            ),
            "list ConfigMaps": (403, lambda: core.list_namespaced_config_map(other)),
            "create a OnePasswordItem": (
                403,
                lambda: custom.create_namespaced_custom_object(
                    crd.GROUP, crd.VERSION, other, crd.PLURAL, item
                ),
            ),
        }
        assert {what: status_of(call) for what, (_, call) in calls.items()} == {
            what: expected for what, (expected, _) in calls.items()
        }
        can = functools.partial(can_i, release.api)
        assert can("watch", "apiextensions.k8s.io", "customresourcedefinitions", None)
        assert not can("create", "apiextensions.k8s.io", "customresourcedefinitions", None)
        assert can("update", "coordination.k8s.io", "leases", release.namespace, name=f"{name}-opsync-leader")
        assert not can("update", "coordination.k8s.io", "leases", other, name=f"{name}-opsync-leader")
    finally:
        release.api.close()
        run_helm(
            "uninstall", name, "--namespace", release.namespace, kubeconfig=cluster.kubeconfig, home=helm_home
        )
        client.CoreV1Api(api_client).delete_namespace(other)
        client.CoreV1Api(api_client).delete_namespace(release.namespace)


# -- the local Connect server sidecar ------------------------------------------------------------


def test_connect_server_sidecar_commands_serve_the_data(helm_home: Path, tmp_path: Path) -> None:
    """No kubelet here: run the chart's init container script and sidecar command as the pod
    would (paths moved into tmp_path), and ask the server for its vaults with the issued token."""
    values = helm_home / "sidecar-values.yaml"
    values.write_text(yaml.safe_dump({"connectServer": {"enabled": True}}))
    rendered = run_helm(
        "template", "demo", str(CHART), "--values", str(values), kubeconfig=None, home=helm_home
    )
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "connect-server")
    operator = next(c for c in pod["containers"] if c["name"] == "operator")
    operator_env = {e["name"]: e.get("value") for e in operator["env"]}
    seed = tmp_path / "seed"
    state = tmp_path / "state"
    seed.mkdir()
    state.mkdir()
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    (seed / "connect-data.yaml").write_text(chart_values["connectServer"]["data"])
    moved = {"/etc/opsync/connect-seed": str(seed), "/var/run/opsync/connect": str(state)}

    def local(text: str) -> str:
        for path, replacement in moved.items():
            text = text.replace(path, replacement)
        return text

    opsync_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{opsync_bin}:{os.environ['PATH']}"}
    subprocess.run([*init["command"], local(init["args"][0])], env=env, check=True, timeout=60)
    token_file = Path(local(operator_env["OP_CONNECT_TOKEN_FILE"]))
    assert token_file.stat().st_mode & 0o077 == 0  # umask 077: the token is for this user only
    port = free_port()
    command = [local(arg) for arg in sidecar["command"]]
    command = [f"--port={port}" if arg.startswith("--port=") else arg for arg in command]
    assert operator_env["OP_CONNECT_HOST"] == "http://127.0.0.1:8090"
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/vaults",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    vaults = json.load(response)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the sidecar did not serve"
                time.sleep(0.2)
        assert [v["name"] for v in vaults] == ["Demo"]
    finally:
        server.terminate()
        server.wait(10)
