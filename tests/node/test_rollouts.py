"""Scenarios 2 and 3: an item change rolls out the workloads that opted in, with real pods.

The workloads' pods read the Secret through an env var and a volume and print both; a change
of the item must end in new pods (a new ReplicaSet, a new ControllerRevision) that print the new
value, exactly once, while a Deployment that did not opt in keeps its pod.
"""

from __future__ import annotations

import asyncio
import time

from opsync.connect.client import ConnectClient
from tests.integration.helpers import VAULT, connect_config, new_item, secret_ready, set_field
from tests.node.support import (
    AUTO_RESTART,
    MEASURED,
    SETTLE_SECONDS,
    Chart,
    NodeEnv,
    create_workload,
    printed,
    replica_sets,
    revisions,
    settled_pod,
    wait_for,
    workload_body,
)


async def test_a_changed_item_rolls_out_an_opted_in_deployment_once_and_no_other(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    del chart
    async with ConnectClient(connect_config(node.connect)) as connect:
        item = await new_item(connect, password="v1")
        node.kube.create_item(namespace, "app-secret", f"vaults/{VAULT}/items/{item.id}", within=30)
        wait_for(lambda: secret_ready(node.kube, namespace, "app-secret"), what="the Secret")
        opted = workload_body(
            "Deployment", "opted", node.image.ref, "app-secret", annotations={AUTO_RESTART: "true"}
        )
        create_workload(node, namespace, opted)
        create_workload(node, namespace, workload_body("Deployment", "plain", node.image.ref, "app-secret"))
        first = settled_pod(node, namespace, "opted")
        plain = settled_pod(node, namespace, "plain")
        assert printed(node, namespace, first.metadata.name) == {"env": "v1", "file": "v1"}
        assert len(replica_sets(node, namespace, "opted")) == 1

        started = time.monotonic()
        await set_field(connect, item, "password", "v2")

    def rolled() -> bool:
        pod = settled_pod(node, namespace, "opted", within=1)
        return (
            pod.metadata.uid != first.metadata.uid
            and printed(node, namespace, pod.metadata.name)["env"] == "v2"
        )

    wait_for(rolled, within=90, what="a new pod printing v2")
    MEASURED["item change -> new Deployment pod Ready with the new env"] = time.monotonic() - started
    second = settled_pod(node, namespace, "opted")
    assert printed(node, namespace, second.metadata.name) == {"env": "v2", "file": "v2"}
    await asyncio.sleep(SETTLE_SECONDS)
    assert len(replica_sets(node, namespace, "opted")) == 2, "exactly one rollout"
    assert settled_pod(node, namespace, "opted").metadata.uid == second.metadata.uid
    # The Deployment that did not opt in keeps its pod and its one ReplicaSet.
    assert settled_pod(node, namespace, "plain").metadata.uid == plain.metadata.uid
    assert len(replica_sets(node, namespace, "plain")) == 1


async def test_stateful_set_and_daemon_set_rollouts_replace_their_pods(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    del chart
    kinds = {"StatefulSet": "stateful", "DaemonSet": "daemon"}
    async with ConnectClient(connect_config(node.connect)) as connect:
        item = await new_item(connect, password="v1")
        node.kube.create_item(namespace, "app-secret", f"vaults/{VAULT}/items/{item.id}", within=30)
        wait_for(lambda: secret_ready(node.kube, namespace, "app-secret"), what="the Secret")
        for kind, name in kinds.items():
            body = workload_body(kind, name, node.image.ref, "app-secret", annotations={AUTO_RESTART: "true"})
            create_workload(node, namespace, body)
        before = {name: settled_pod(node, namespace, name) for name in kinds.values()}
        for name, pod in before.items():
            assert printed(node, namespace, pod.metadata.name)["env"] == "v1", name
        started = time.monotonic()
        await set_field(connect, item, "password", "v2")

    for name, old in before.items():

        def replaced(name: str = name, old_uid: str = old.metadata.uid) -> bool:
            pod = settled_pod(node, namespace, name, within=1)
            return pod.metadata.uid != old_uid and printed(node, namespace, pod.metadata.name)["env"] == "v2"

        wait_for(replaced, within=90, what=f"{name}'s pod replaced, printing v2")
        MEASURED[f"item change -> new {name} pod printing v2"] = time.monotonic() - started
    await asyncio.sleep(SETTLE_SECONDS)
    for name in kinds.values():
        assert len(revisions(node, namespace, name)) == 2, f"{name}: exactly one rollout"
        assert printed(node, namespace, settled_pod(node, namespace, name).metadata.name) == {
            "env": "v2",
            "file": "v2",
        }
