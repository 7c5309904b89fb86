"""Change detection and rollout restarts, end to end, with the Connect server's own counter.

This module runs a Connect server and an operator of its own (``opc-*``, polling every
two seconds, a full resync every third poll), so that every request the server counts
comes from that operator or from the test itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.connect.models import PatchOperation
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess, request_delta
from tests.conftest import Cluster
from tests.integration.helpers import (
    DATA,
    VAULT,
    connect_config,
    eventually,
    install_rollout_crd,
    new_item,
    pod_spec,
    running_operator,
    secret_ready,
    set_field,
    start_connect,
    watched_namespace,
    workload,
)

PREFIX = "opc-"
INTERVAL = 2.0
FULL_RESYNC_EVERY = 3
AUTO_RESTART = "operator.1password.io/auto-restart"
LAST_RESTARTED = "operator.1password.io/last-restarted"
RESTARTED_FOR = "opsync.io/restarted-for"
TWIN_CREATED = "2026-01-01T00:00:00Z"
DATA_WITH_TWINS: dict[str, Any] = {
    "vaults": [
        {
            **DATA["vaults"][0],
            "items": [
                {"title": "twin", "category": "LOGIN", "createdAt": TWIN_CREATED, "fields": [_f]}
                for _f in (
                    {"label": "which", "value": "one", "type": "STRING"},
                    {"label": "which", "value": "two", "type": "STRING"},
                )
            ],
        },
        *DATA["vaults"][1:],
    ]
}


@pytest.fixture(scope="module")
def change_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(tmp_path_factory.mktemp("change-connect"), data=DATA_WITH_TWINS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def change_operator(
    cluster: Cluster,
    crds_installed: None,
    api_client: client.ApiClient,
    change_connect: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    install_rollout_crd(api_client)
    with running_operator(
        cluster,
        change_connect,
        Path(tmp_path_factory.mktemp("change-operator")),
        namespace_prefix=PREFIX,
        env={"POLLING_INTERVAL": str(int(INTERVAL)), "OPSYNC_FULL_RESYNC_EVERY": str(FULL_RESYNC_EVERY)},
    ) as process:
        yield process


@pytest.fixture
def ns(api_client: client.ApiClient, change_operator: OperatorProcess) -> Iterator[str]:
    with watched_namespace(api_client, change_operator) as name:
        yield name


@pytest.fixture
async def cc(change_connect: ConnectServerProcess) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(connect_config(change_connect)) as api:
        yield api


async def after_polls(operator: OperatorProcess, count: int) -> float:
    """Wait until ``count`` more polls have ended; return right after the last one ended."""
    start = operator.polls()
    return await eventually(
        lambda: operator.polls() if operator.polls() >= start + count else None,
        within=count * INTERVAL * 1.2 + 15,
    )


def full_resyncs(polls: float, ended: float) -> int:
    """Full resyncs among the polls numbered after ``polls`` up to ``ended`` (every third)."""
    return sum(1 for n in range(int(polls) + 1, int(ended) + 1) if n % FULL_RESYNC_EVERY == 0)


async def between_polls(operator: OperatorProcess) -> None:
    """Return just after a poll ended: the next starts about INTERVAL seconds later."""
    await after_polls(operator, 1)


def create_workload(api_client: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    apps = client.AppsV1Api(api_client)
    kind = body["kind"]
    if kind == "Deployment":
        apps.create_namespaced_deployment(namespace, body)
    elif kind == "StatefulSet":
        apps.create_namespaced_stateful_set(namespace, body)
    elif kind == "DaemonSet":
        apps.create_namespaced_daemon_set(namespace, body)
    else:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "rollouts", body
        )


def template_annotations(
    api_client: client.ApiClient, namespace: str, kind: str, name: str
) -> dict[str, str]:
    apps = client.AppsV1Api(api_client)
    if kind == "Rollout":
        body: Any = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "rollouts", name
        )
        return dict(body["spec"]["template"].get("metadata", {}).get("annotations") or {})
    read = {
        "Deployment": apps.read_namespaced_deployment,
        "StatefulSet": apps.read_namespaced_stateful_set,
        "DaemonSet": apps.read_namespaced_daemon_set,
    }[kind]
    return dict(read(name, namespace).spec.template.metadata.annotations or {})


def resource_versions(kube: Kube, namespace: str, names: list[str]) -> dict[str, str]:
    versions = {}
    for name in names:
        secret = kube.secret(namespace, name)
        assert secret is not None
        versions[f"secret/{name}"] = secret.metadata.resource_version
        versions[f"item/{name}"] = kube.item(namespace, name)["metadata"]["resourceVersion"]
    return versions


# -- change detection ----------------------------------------------------------------------------


async def test_an_idle_poll_is_one_request_and_no_write(
    change_operator: OperatorProcess,
    change_connect: ConnectServerProcess,
    ns: str,
    kube: Kube,
    cc: ConnectClient,
) -> None:
    by_title = await new_item(cc, title="idle-by-title", password="a")
    by_id = await new_item(cc, title="idle-by-id", password="b")
    kube.create_item(ns, "idle-title", f"vaults/{VAULT}/items/{by_title.title}")
    kube.create_item(ns, "idle-id", f"vaults/{by_id.vault.id}/items/{by_id.id}")
    for name in ("idle-title", "idle-id"):
        await eventually(lambda name=name: secret_ready(kube, ns, name))
    await after_polls(change_operator, 4)  # past a full resync: every vault in use listed once

    await between_polls(change_operator)
    polls, before = change_operator.polls(), change_connect.requests()
    versions = resource_versions(kube, ns, ["idle-title", "idle-id"])
    ended = await after_polls(change_operator, 3)
    delta = request_delta(before, change_connect.requests())
    idle = ended - polls
    assert delta.pop(("GET", "/v1/vaults")) == idle
    # A full resync lists each vault in use (one here) and reads nothing else.
    resyncs = full_resyncs(polls, ended)
    assert delta == ({("GET", "/v1/vaults/{vaultUuid}/items"): resyncs} if resyncs else {})
    assert resource_versions(kube, ns, ["idle-title", "idle-id"]) == versions


async def test_a_change_costs_three_requests_and_reaches_the_secret_within_an_interval(
    change_operator: OperatorProcess,
    change_connect: ConnectServerProcess,
    ns: str,
    kube: Kube,
    cc: ConnectClient,
) -> None:
    item = await new_item(cc, title="changing", password="v1")
    kube.create_item(ns, "changing", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: secret_ready(kube, ns, "changing"))
    await after_polls(change_operator, 1)
    await between_polls(change_operator)

    polls, before = change_operator.polls(), change_connect.requests()
    changed_at = time.monotonic()
    await set_field(cc, item, "password", "v2")
    await eventually(lambda: kube.secret_data(ns, "changing") == {"password": b"v2"})
    latency = time.monotonic() - changed_at
    ended = await after_polls(change_operator, 1)
    delta = request_delta(before, change_connect.requests())

    assert delta.pop(("PATCH", "/v1/vaults/{vaultUuid}/items/{itemUuid}")) == 1  # the test's own change
    assert delta.pop(("GET", "/v1/vaults")) == ended - polls  # one per poll
    # One listing for the change; a full resync in the window lists the vault once more.
    assert 1 <= delta.pop(("GET", "/v1/vaults/{vaultUuid}/items")) <= 1 + full_resyncs(polls, ended)
    assert delta == {("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}"): 1}
    assert latency <= INTERVAL * 1.1 + 2
    status = kube.item(ns, "changing")["status"]
    assert status["itemVersion"] == 2


async def test_a_changed_item_is_listed_once_and_read_once_for_two_secrets(
    change_operator: OperatorProcess,
    change_connect: ConnectServerProcess,
    ns: str,
    kube: Kube,
    cc: ConnectClient,
) -> None:
    item = await new_item(cc, title="shared-item", password="v1")
    kube.create_item(ns, "shared-a", f"vaults/{VAULT}/items/{item.title}")
    kube.create_item(ns, "shared-b", f"vaults/{item.vault.id}/items/{item.id}")
    for name in ("shared-a", "shared-b"):
        await eventually(lambda name=name: secret_ready(kube, ns, name))
    await after_polls(change_operator, 1)
    await between_polls(change_operator)
    polls, before = change_operator.polls(), change_connect.requests()
    await set_field(cc, item, "password", "v2")
    for name in ("shared-a", "shared-b"):
        await eventually(lambda name=name: kube.secret_data(ns, name) == {"password": b"v2"})
    ended = await after_polls(change_operator, 1)
    delta = request_delta(before, change_connect.requests())
    assert delta.pop(("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}")) == 1
    # Listed once for the change, plus once per full resync in the window.
    assert delta.pop(("GET", "/v1/vaults/{vaultUuid}/items")) <= 1 + full_resyncs(polls, ended)


async def test_the_ignore_tag_freezes_the_secret(
    change_operator: OperatorProcess, ns: str, kube: Kube, cc: ConnectClient
) -> None:
    item = await new_item(cc, title="frozen", password="v1")
    kube.create_item(ns, "frozen", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: secret_ready(kube, ns, "frozen"))
    await cc.patch_item(
        str(item.vault.id),
        str(item.id),
        [PatchOperation(op="add", path="/tags", value=["operator.1password.io:ignore-secret"])],
    )
    await set_field(cc, item, "password", "v2")
    await eventually(lambda: "ignore-secret" in (kube.ready(ns, "frozen") or {}).get("message", ""))
    await after_polls(change_operator, 2)
    assert kube.secret_data(ns, "frozen") == {"password": b"v1"}


async def test_duplicate_titles_do_not_flap(
    change_operator: OperatorProcess, ns: str, kube: Kube, api_client: client.ApiClient
) -> None:
    # Two items titled "twin" with the same createdAt: the official operator picks either,
    # poll after poll, and restarts the workload each time it switches.
    kube.create_item(ns, "twin", f"vaults/{VAULT}/items/twin", annotations={AUTO_RESTART: "true"})
    create_workload(api_client, ns, workload("Deployment", "twin-app", pod_spec("twin", "envFrom")))
    await eventually(lambda: secret_ready(kube, ns, "twin"))
    secret = kube.secret(ns, "twin")
    assert secret is not None
    first = (secret.metadata.resource_version, dict(kube.secret_data(ns, "twin") or {}))
    await after_polls(change_operator, 4)  # one full resync at least
    secret = kube.secret(ns, "twin")
    assert secret is not None
    assert (secret.metadata.resource_version, dict(kube.secret_data(ns, "twin") or {})) == first
    assert LAST_RESTARTED not in template_annotations(api_client, ns, "Deployment", "twin-app")


# -- rollout restarts ----------------------------------------------------------------------------


async def test_a_change_restarts_each_opted_in_workload_of_every_kind_once(
    change_operator: OperatorProcess, ns: str, kube: Kube, cc: ConnectClient, api_client: client.ApiClient
) -> None:
    item = await new_item(cc, title="rotating", password="v1")
    kube.create_item(ns, "rotating", f"vaults/{VAULT}/items/{item.title}")
    on = {AUTO_RESTART: "true"}
    restarted = [
        ("Deployment", "web", pod_spec("rotating", "env"), on),
        ("StatefulSet", "db", pod_spec("rotating", "volume"), on),
        ("DaemonSet", "agent", pod_spec("rotating", "envFrom"), on),
        ("Rollout", "canary", pod_spec("rotating", "projected"), on),
    ]
    left_alone = [
        ("Deployment", "opted-out", pod_spec("rotating", "env"), {AUTO_RESTART: "false"}),
        ("Deployment", "unannotated", pod_spec("rotating", "env"), {}),  # AUTO_RESTART is off
        ("Deployment", "unrelated", pod_spec("another-secret", "env"), on),
    ]
    for kind, name, spec, notes in restarted + left_alone:
        create_workload(api_client, ns, workload(kind, name, spec, notes))
    await eventually(lambda: secret_ready(kube, ns, "rotating"))
    await after_polls(change_operator, 1)
    for kind, name, _, _ in restarted + left_alone:
        assert LAST_RESTARTED not in template_annotations(api_client, ns, kind, name)

    await set_field(cc, item, "password", "v2")
    for kind, name, _, _ in restarted:
        await eventually(
            lambda kind=kind, name=name: LAST_RESTARTED in template_annotations(api_client, ns, kind, name)
        )
    first = {name: template_annotations(api_client, ns, kind, name) for kind, name, _, _ in restarted}
    assert all(a[RESTARTED_FOR].startswith("rotating=") for a in first.values())
    await after_polls(change_operator, 4)  # more polls, a full resync: no second rollout
    for kind, name, _, _ in restarted:
        assert template_annotations(api_client, ns, kind, name) == first[name]
    for kind, name, _, _ in left_alone:
        assert LAST_RESTARTED not in template_annotations(api_client, ns, kind, name)
    reasons = {event.reason for event in kube.events(ns, "web")}
    assert "RolloutRestarted" in reasons

    await set_field(cc, item, "password", "v3")  # the next change restarts them again, once
    await eventually(
        lambda: (
            template_annotations(api_client, ns, "Deployment", "web")[RESTARTED_FOR]
            != first["web"][RESTARTED_FOR]
        )
    )


async def test_restart_precedence_secret_then_workload_then_namespace(
    change_operator: OperatorProcess, ns: str, kube: Kube, cc: ConnectClient, api_client: client.ApiClient
) -> None:
    client.CoreV1Api(api_client).patch_namespace(ns, {"metadata": {"annotations": {AUTO_RESTART: "true"}}})
    item = await new_item(cc, title="precedence", password="v1")
    path = f"vaults/{VAULT}/items/{item.title}"
    kube.create_item(ns, "by-namespace", path)
    kube.create_item(ns, "cr-says-no", path, annotations={AUTO_RESTART: "false"})
    cases = {
        "ns-on": ("by-namespace", {}),  # namespace opts in
        "workload-off": ("by-namespace", {AUTO_RESTART: "false"}),  # workload beats namespace
        "cr-off": ("cr-says-no", {AUTO_RESTART: "true"}),  # the CR (its Secret) beats the workload
    }
    for name, (secret, notes) in cases.items():
        create_workload(api_client, ns, workload("Deployment", name, pod_spec(secret, "env"), notes))
    for secret in ("by-namespace", "cr-says-no"):
        await eventually(lambda secret=secret: secret_ready(kube, ns, secret))
    await set_field(cc, item, "password", "v2")
    await eventually(lambda: LAST_RESTARTED in template_annotations(api_client, ns, "Deployment", "ns-on"))
    await eventually(lambda: kube.secret_data(ns, "cr-says-no") == {"password": b"v2"})
    await after_polls(change_operator, 1)
    assert LAST_RESTARTED not in template_annotations(api_client, ns, "Deployment", "workload-off")
    assert LAST_RESTARTED not in template_annotations(api_client, ns, "Deployment", "cr-off")


async def test_an_operator_restart_does_not_restart_workloads_again(
    cluster: Cluster,
    crds_installed: None,
    change_connect: ConnectServerProcess,
    api_client: client.ApiClient,
    kube: Kube,
    cc: ConnectClient,
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {
        "namespace_prefix": "opr-",
        "env": {"POLLING_INTERVAL": str(int(INTERVAL)), "AUTO_RESTART": "true"},
    }
    item = await new_item(cc, title="restart-once", password="v1")
    with (
        running_operator(cluster, change_connect, tmp_path / "first", **options) as first,
        watched_namespace(api_client, first) as namespace,
    ):
        kube.create_item(namespace, "restart-once", f"vaults/{VAULT}/items/{item.title}")
        create_workload(api_client, namespace, workload("Deployment", "app", pod_spec("restart-once", "env")))
        await eventually(lambda: secret_ready(kube, namespace, "restart-once"))
        await set_field(cc, item, "password", "v2")
        await eventually(
            lambda: LAST_RESTARTED in template_annotations(api_client, namespace, "Deployment", "app")
        )
        restarted = template_annotations(api_client, namespace, "Deployment", "app")
        first.stop()

        # The new operator resumes every item; the data it finds is what the app restarted for.
        with running_operator(cluster, change_connect, tmp_path / "second", **options) as second:
            await after_polls(second, 2)
            assert template_annotations(api_client, namespace, "Deployment", "app") == restarted
            second.stop()

        # A change while no operator runs is rolled out once by the next one, at resume.
        await set_field(cc, item, "password", "v3")
        with running_operator(cluster, change_connect, tmp_path / "third", **options) as third:
            await eventually(lambda: kube.secret_data(namespace, "restart-once") == {"password": b"v3"})
            await eventually(
                lambda: (
                    template_annotations(api_client, namespace, "Deployment", "app")[RESTARTED_FOR]
                    != restarted[RESTARTED_FOR]
                )
            )
            again = template_annotations(api_client, namespace, "Deployment", "app")
            await after_polls(third, 2)
            assert template_annotations(api_client, namespace, "Deployment", "app") == again


# -- force sync ----------------------------------------------------------------------------------


async def test_the_force_sync_annotation_syncs_now(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    # The session operator polls once an hour: only the annotation can bring the change in.
    item = await new_item(connect, password="v1")
    kube.create_item(op_namespace, "forced", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: secret_ready(kube, op_namespace, "forced"))
    await set_field(connect, item, "password", "v2")
    await asyncio.sleep(1)
    assert kube.secret_data(op_namespace, "forced") == {"password": b"v1"}
    kube.patch_item(op_namespace, "forced", {"metadata": {"annotations": {"opsync.io/force-sync": "1"}}})
    await eventually(lambda: kube.secret_data(op_namespace, "forced") == {"password": b"v2"}, within=10)
