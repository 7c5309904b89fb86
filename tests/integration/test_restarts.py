"""Rollout restarts against the real API server: every workload kind, the official precedence,
and exactly one restart per data change.

No controllers run in the test control plane, so the workloads never get pods: a restart is
visible as the pod-template annotations the Restarter writes, and "nothing happened" as an
unchanged resourceVersion. Argo Rollouts are served by a minimal CRD (schema-less), created
once for the session and left in place.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from kubernetes import client

from opsync.core.desired import ObjectRef
from opsync.core.mapping import SecretData
from opsync.core.workloads import (
    DAEMON_SET,
    DEPLOYMENT,
    ROLLOUT,
    STATEFUL_SET,
    WorkloadKind,
    data_fingerprint,
)
from opsync.kube import KubeApi
from opsync.sync.restarts import Restart, Restarter, SecretChange
from tests.integration.helpers import crd_exists, install_rollout_crd

AUTO_RESTART = "operator.1password.io/auto-restart"
LAST_RESTARTED = "operator.1password.io/last-restarted"
RESTARTED_FOR = "opsync.io/restarted-for"

# -- Fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rollout_crd(api_client: client.ApiClient) -> None:
    install_rollout_crd(api_client)


@pytest.fixture
def kube_api(api_client: client.ApiClient) -> KubeApi:
    # Not closed: it shares the session's ApiClient.
    return KubeApi(api_client)


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "registry.invalid/app:1", **extra}


ENV = {
    "containers": [container(env=[{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}])]
}
ENV_FROM_INIT = {
    "initContainers": [container(name="init", envFrom=[{"secretRef": {"name": "db"}}])],
    "containers": [container()],
}
VOLUME = {"containers": [container()], "volumes": [{"name": "s", "secret": {"secretName": "db"}}]}
PROJECTED = {
    "containers": [container()],
    "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "db"}}]}}],
}
PULL_ONLY = {"containers": [container()], "imagePullSecrets": [{"name": "db"}]}
OTHER = {"containers": [container(envFrom=[{"secretRef": {"name": "other"}}])]}


def body(
    kind: WorkloadKind, name: str, pod: dict[str, Any], annotations: dict[str, str] | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
    }
    if kind.kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


class Workloads:
    """Creates and reads workloads of every kind in one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def create(
        self, kind: WorkloadKind, name: str, pod: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> None:
        # CustomObjectsApi serves apps/v1 too: one code path for every kind, raw dicts back.
        self.custom.create_namespaced_custom_object(
            kind.group, kind.version, self.namespace, kind.plural, body(kind, name, pod, annotations)
        )

    def get(self, kind: WorkloadKind, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            kind.group, kind.version, self.namespace, kind.plural, name
        )
        return found

    def template_annotations(self, kind: WorkloadKind, name: str) -> dict[str, str]:
        return dict(self.get(kind, name)["spec"]["template"]["metadata"].get("annotations") or {})

    def versions(self, workloads: list[tuple[WorkloadKind, str]]) -> dict[str, str]:
        return {f"{k.kind}/{n}": self.get(k, n)["metadata"]["resourceVersion"] for k, n in workloads}

    def annotate_namespace(self, value: str) -> None:
        self.core.patch_namespace(self.namespace, {"metadata": {"annotations": {AUTO_RESTART: value}}})

    def events(self, name: str) -> list[client.CoreV1Event]:
        found = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return list(found.items)


def fingerprint(value: bytes, uid: str = "secret-uid") -> str:
    return data_fingerprint(SecretData({"password": value}), uid)


def owner(namespace: str, name: str = "db") -> ObjectRef:
    return ObjectRef("onepassword.com/v1", "OnePasswordItem", namespace, name, str(uuid.uuid4()))


def labels(restarts: list[Restart]) -> set[str]:
    return {f"{r.kind}/{r.name}" for r in restarts}


# -- Tests ---------------------------------------------------------------------------------------------


async def test_rollouts_are_found_once_their_crd_is_installed(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Runs first in this module: with the CRD absent, Rollouts count as none, and that answer is
    kept for a while; once Argo is installed they are listed after the recheck interval."""
    if crd_exists(api_client):
        pytest.skip("the Rollout CRD is installed already (shared cluster)")
    workloads = Workloads(api_client, namespace)
    workloads.create(DEPLOYMENT, "web", ENV)
    patient, eager = KubeApi(api_client), KubeApi(api_client)
    patient.ROLLOUTS_RECHECK_SECONDS = 3600.0
    eager.ROLLOUTS_RECHECK_SECONDS = 0.2
    for kube in (patient, eager):
        assert [w["kind"] for w in await kube.list_workloads(namespace)] == ["Deployment"]

    install_rollout_crd(api_client)
    workloads.create(ROLLOUT, "canary", ENV)
    await asyncio.sleep(0.3)
    assert [w["kind"] for w in await patient.list_workloads(namespace)] == ["Deployment"]  # still believed
    found = await eager.list_workloads(namespace)
    assert sorted((w["apiVersion"], w["kind"], w["metadata"]["name"]) for w in found) == [
        ("apps/v1", "Deployment", "web"),
        ("argoproj.io/v1alpha1", "Rollout", "canary"),
    ]


async def test_exactly_the_opted_in_users_restart_once_per_data_change(
    api_client: client.ApiClient, namespace: str, kube_api: KubeApi, rollout_crd: None
) -> None:
    workloads = Workloads(api_client, namespace)
    users = [(DEPLOYMENT, "web"), (STATEFUL_SET, "store"), (DAEMON_SET, "agent"), (ROLLOUT, "canary")]
    workloads.create(DEPLOYMENT, "web", ENV)
    workloads.create(STATEFUL_SET, "store", VOLUME)
    workloads.create(DAEMON_SET, "agent", PROJECTED)
    workloads.create(ROLLOUT, "canary", ENV_FROM_INIT)
    others = [(DEPLOYMENT, "bystander"), (DEPLOYMENT, "pull-only"), (STATEFUL_SET, "opted-out")]
    workloads.create(DEPLOYMENT, "bystander", OTHER)
    workloads.create(DEPLOYMENT, "pull-only", PULL_ONLY)
    workloads.create(STATEFUL_SET, "opted-out", VOLUME, annotations={AUTO_RESTART: "false"})
    untouched = workloads.versions(others)

    counted: list[Restart] = []
    restarter = Restarter(kube_api, default=True, on_restart=counted.append)
    item = owner(namespace)
    first = fingerprint(b"one")
    change = SecretChange(namespace, "db", first, {}, item)

    done = await restarter.restart([change])
    assert labels(done) == {"Deployment/web", "StatefulSet/store", "DaemonSet/agent", "Rollout/canary"}
    assert counted == done
    assert all(r.secrets == ("db",) and r.namespace == namespace for r in done)
    for kind, name in users:
        annotations = workloads.template_annotations(kind, name)
        assert annotations[RESTARTED_FOR] == f"db={first}"
        assert annotations[LAST_RESTARTED].endswith("Z")
    assert workloads.versions(others) == untouched

    # The same change reported again (next poll, operator restart, a second owner): nothing.
    restarted = workloads.versions(users)
    assert (
        await restarter.restart([change, SecretChange(namespace, "db", first, {}, owner(namespace, "db2"))])
        == []
    )
    assert workloads.versions(users) == restarted
    assert workloads.versions(others) == untouched

    # New data: each user restarts once more.
    second = fingerprint(b"two")
    again = await restarter.restart([SecretChange(namespace, "db", second, {}, item)])
    assert labels(again) == labels(done)
    assert all(workloads.template_annotations(k, n)[RESTARTED_FOR] == f"db={second}" for k, n in users)
    assert workloads.versions(others) == untouched

    # The same Event twice: one Event whose count is 2 (the same text again within 10 minutes).
    web_events = [e for e in workloads.events("web") if e.reason == "RolloutRestarted"]
    assert sum(e.count or 1 for e in web_events) == 2
    assert {(e.type, e.message, e.involved_object.kind) for e in web_events} == {
        ("Normal", "restarted: Secret db changed", "Deployment")
    }
    owner_events = [e for e in workloads.events("db") if e.reason == "RolloutRestarted"]
    assert sum(e.count or 1 for e in owner_events) == 2
    for event in owner_events:
        assert event.involved_object.kind == "OnePasswordItem"
        assert event.message.endswith(": Secret db changed")
        assert all(label in event.message for label in labels(done))


@pytest.mark.parametrize(
    ("secret", "namespace_value", "default", "expected"),
    [
        (None, None, False, {"annotated-true"}),
        (None, None, True, {"plain", "annotated-true"}),
        (None, "true", False, {"plain", "annotated-true"}),
        (None, "false", True, {"annotated-true"}),
        (None, "bogus", True, {"annotated-true"}),
        ("true", "false", False, {"plain", "annotated-true", "annotated-false", "annotated-bogus"}),
        ("false", "true", True, set()),
        ("bogus", "true", True, set()),
    ],
    ids=[
        "default-off",
        "default-on",
        "namespace-on",
        "namespace-off",
        "namespace-invalid",
        "secret-on",
        "secret-off",
        "secret-invalid",
    ],
)
async def test_precedence_secret_workload_namespace_default(
    api_client: client.ApiClient,
    namespace: str,
    kube_api: KubeApi,
    secret: str | None,
    namespace_value: str | None,
    default: bool,
    expected: set[str],
) -> None:
    workloads = Workloads(api_client, namespace)
    workloads.create(DEPLOYMENT, "plain", ENV)
    for value in ("true", "false", "bogus"):
        workloads.create(DEPLOYMENT, f"annotated-{value}", ENV, annotations={AUTO_RESTART: value})
    if namespace_value is not None:
        workloads.annotate_namespace(namespace_value)
    secret_annotations = {} if secret is None else {AUTO_RESTART: secret}

    done = await Restarter(kube_api, default=default).restart(
        [SecretChange(namespace, "db", fingerprint(b"x"), secret_annotations, None)]
    )
    assert {r.name for r in done} == expected
    for name in ("plain", "annotated-true", "annotated-false", "annotated-bogus"):
        assert (RESTARTED_FOR in workloads.template_annotations(DEPLOYMENT, name)) == (name in expected)


async def test_one_rollout_per_workload_for_several_secrets(
    api_client: client.ApiClient, namespace: str, kube_api: KubeApi
) -> None:
    workloads = Workloads(api_client, namespace)
    both = {
        "containers": [container(envFrom=[{"secretRef": {"name": "db"}}, {"secretRef": {"name": "api"}}])],
    }
    workloads.create(DEPLOYMENT, "both", both)
    workloads.create(
        DEPLOYMENT, "api-only", {"containers": [container(envFrom=[{"secretRef": {"name": "api"}}])]}
    )
    db_owner, api_owner = owner(namespace, "db"), owner(namespace, "api")
    changes = [
        SecretChange(namespace, "db", fingerprint(b"d"), {}, db_owner),
        SecretChange(namespace, "api", fingerprint(b"a"), {}, api_owner),
    ]

    done = await Restarter(kube_api, default=True).restart(changes)
    assert sorted((r.name, r.secrets) for r in done) == [("api-only", ("api",)), ("both", ("api", "db"))]
    workload = workloads.get(DEPLOYMENT, "both")
    assert workload["metadata"]["generation"] == 2  # one change of the pod template
    record = workload["spec"]["template"]["metadata"]["annotations"][RESTARTED_FOR]
    assert record == f"api={fingerprint(b'a')},db={fingerprint(b'd')}"
    [event] = [e for e in workloads.events("both") if e.reason == "RolloutRestarted"]
    assert event.message == "restarted: Secrets api, db changed"
    [api_event] = [e for e in workloads.events("api") if e.reason == "RolloutRestarted"]
    assert api_event.message == "restarted Deployment/api-only, Deployment/both: Secret api changed"
    [db_event] = [e for e in workloads.events("db") if e.reason == "RolloutRestarted"]
    assert db_event.message == "restarted Deployment/both: Secret db changed"

    # Only db changes next: the api entry is kept.
    assert await Restarter(kube_api, default=True).restart(changes[1:]) == []
    newer = fingerprint(b"d2")
    done = await Restarter(kube_api, default=True).restart(
        [SecretChange(namespace, "db", newer, {}, db_owner)]
    )
    assert [(r.name, r.secrets) for r in done] == [("both", ("db",))]
    record = workloads.template_annotations(DEPLOYMENT, "both")[RESTARTED_FOR]
    assert record == f"api={fingerprint(b'a')},db={newer}"


class FlakyKube(KubeApi):
    """Lists a Deployment that is gone by the time it is patched, and cannot post Events."""

    async def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        found = await super().list_workloads(namespace)
        ghost = body(DEPLOYMENT, "ghost", ENV, None)
        ghost["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
        return [ghost, *found]

    async def post_event(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None:
        raise RuntimeError("events are down")


async def test_a_deleted_workload_and_failing_events_do_not_stop_the_others(
    api_client: client.ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    workloads = Workloads(api_client, namespace)
    workloads.create(DEPLOYMENT, "web", ENV)
    done = await Restarter(FlakyKube(api_client), default=True).restart(
        [SecretChange(namespace, "db", fingerprint(b"x"), {}, owner(namespace))]
    )
    assert labels(done) == {"Deployment/web"}
    assert RESTARTED_FOR in workloads.template_annotations(DEPLOYMENT, "web")
    assert "could not post Event RolloutRestarted" in caplog.text


async def test_each_namespace_is_listed_on_its_own(
    api_client: client.ApiClient, kube_api: KubeApi, request: pytest.FixtureRequest
) -> None:
    names = [f"restarts-multi-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    core = client.CoreV1Api(api_client)
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        request.addfinalizer(lambda name=name: core.delete_namespace(name))
        Workloads(api_client, name).create(DEPLOYMENT, "web", ENV)
    changes = [SecretChange(name, "db", fingerprint(b"x"), {}, None) for name in names]
    done = await Restarter(kube_api, default=True).restart(changes)
    assert sorted((r.namespace, r.name) for r in done) == sorted((name, "web") for name in names)
