"""Scenario 5: two operator replicas from the chart. The leader's pod is deleted, then (once
the Deployment has two again) the leader's process is killed with SIGKILL inside the node; the
other replica takes over. Take-over is measured as the time from the blow to a change of an
item reaching its Secret; every change is written and rolled out once, never twice.
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
    SecretHistory,
    container_pid,
    create_workload,
    kill9,
    replica_sets,
    settled_pod,
    wait_for,
    workload_body,
)


async def test_the_standby_replica_takes_over_after_delete_and_kill(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    chart.scale(2)
    try:
        history = SecretHistory(node, namespace)
        async with ConnectClient(connect_config(node.connect)) as connect:
            item = await new_item(connect, password="v0")
            node.kube.create_item(namespace, "app", f"vaults/{VAULT}/items/{item.id}", within=30)
            wait_for(lambda: secret_ready(node.kube, namespace, "app"), what="the Secret")
            body = workload_body(
                "Deployment", "app", node.image.ref, "app", annotations={AUTO_RESTART: "true"}
            )
            create_workload(node, namespace, body)
            settled_pod(node, namespace, "app")
            history.sample()

            for blow, value in (("deleted", "v1"), ("killed", "v2")):
                pods = {p.metadata.name: p for p in chart.wait_ready(2)}
                leader = wait_for(lambda pods=pods: chart.leader_pod() in pods and chart.leader_pod())
                holder = chart.lease_holder()
                started = time.monotonic()
                if blow == "deleted":
                    node.core.delete_namespaced_pod(leader, chart.namespace)
                else:
                    kill9(container_pid(node, pods[leader]))
                await set_field(connect, item, "password", value)
                taken: list[float] = []

                def arrived(value: str = value, holder: str = holder, taken: list[float] = taken) -> bool:
                    history.sample()
                    if not taken and chart.lease_holder() not in ("", holder):
                        taken.append(time.monotonic() - started)
                    return node.kube.secret_data(namespace, "app") == {"password": value.encode()}

                wait_for(arrived, within=90, what=f"the change after the leader was {blow}")
                MEASURED[f"two replicas, leader {blow} -> the change in the Secret"] = (
                    time.monotonic() - started
                )
                wait_for(
                    lambda holder=holder: chart.lease_holder() not in ("", holder), what="a new Lease holder"
                )
                moved = taken[0] if taken else time.monotonic() - started
                MEASURED[f"two replicas, leader {blow} -> Lease held by another identity"] = moved
                settled_pod(node, namespace, "app")
                for _ in range(int(SETTLE_SECONDS / 0.2)):
                    history.sample()
                    await asyncio.sleep(0.2)
        assert history.changes("app") == 2, history.seen.get("app")
        assert len(replica_sets(node, namespace, "app")) == 3, "one rollout per change, none twice"
    finally:
        chart.scale(1)
