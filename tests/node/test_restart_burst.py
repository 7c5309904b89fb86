"""Scenario 6: the operator pod is killed (SIGKILL, inside the node) during a burst of item
changes; the kubelet restarts it. Every Secret ends equal to its item, and every workload was
rolled out once per change of its Secret's data: none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import time

from opsync.connect.client import ConnectClient
from tests.integration.helpers import VAULT, connect_config, new_item, secret_ready, set_field
from tests.node.support import (
    AUTO_RESTART,
    MEASURED,
    POLL_SECONDS,
    SETTLE_SECONDS,
    Chart,
    NodeEnv,
    SecretHistory,
    container_pid,
    create_workload,
    kill9,
    replica_sets,
    settled_pod,
    wait_for,
    workload_body,
)

APPS = 3
ROUNDS = 4


async def test_a_killed_operator_pod_restarts_and_every_change_rolls_out_once(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    names = [f"app{i}" for i in range(APPS)]
    history = SecretHistory(node, namespace)
    async with ConnectClient(connect_config(node.connect)) as connect:
        items = {name: await new_item(connect, password="v0") for name in names}
        for name, item in items.items():
            node.kube.create_item(namespace, name, f"vaults/{VAULT}/items/{item.id}", within=30)
        for name in names:
            wait_for(lambda name=name: secret_ready(node.kube, namespace, name), what=f"Secret {name}")
            body = workload_body("Deployment", name, node.image.ref, name, annotations={AUTO_RESTART: "true"})
            create_workload(node, namespace, body)
        for name in names:
            settled_pod(node, namespace, name)
        history.sample()
        (pod,) = chart.ready_pods()
        restarts_before = next(s for s in pod.status.container_statuses if s.name == "operator").restart_count

        # A burst: each round changes every item; in the middle the operator's process is killed.
        for round_ in range(1, ROUNDS + 1):
            for name, item in items.items():
                await set_field(connect, item, "password", f"v{round_}")
            if round_ == ROUNDS // 2:
                await asyncio.sleep(POLL_SECONDS * 0.6)  # the poll may be under way
                kill9(container_pid(node, pod))
                killed_at = time.monotonic()
            for _ in range(int(POLL_SECONDS * 1.5 / 0.1)):
                history.sample()
                await asyncio.sleep(0.1)

    def converged() -> bool:
        history.sample()
        return all(node.kube.secret_data(namespace, n) == {"password": f"v{ROUNDS}".encode()} for n in names)

    wait_for(converged, within=120, what="every Secret equal to its item")
    MEASURED["operator killed mid-burst -> every Secret current"] = time.monotonic() - killed_at
    (restarted,) = chart.wait_ready(1)
    status = next(s for s in restarted.status.container_statuses if s.name == "operator")
    assert restarted.metadata.uid == pod.metadata.uid, "the kubelet restarted the container in the same pod"
    assert status.restart_count == restarts_before + 1
    for _ in range(int(SETTLE_SECONDS / 0.2)):
        history.sample()
        await asyncio.sleep(0.2)
    for name in names:
        settled_pod(node, namespace, name)
        changes = history.changes(name)
        assert changes >= 1
        assert len(replica_sets(node, namespace, name)) == 1 + changes, (
            f"{name}: {changes} data changes, {len(replica_sets(node, namespace, name)) - 1} rollouts"
        )
