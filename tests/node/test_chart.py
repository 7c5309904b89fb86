"""Scenario 1: the chart's Deployment runs the built image on the node, as the chart says.

The operator pod becomes Ready through its own liveness and readiness probes, runs as the
chart's ServiceAccount, as uid 65532 with a read-only root filesystem (read from the running
process, not from the manifest), and syncs an item from a Connect server on the host that the
pod reaches at the node's address.
"""

from __future__ import annotations

import time
from pathlib import Path

from opsync.connect.client import ConnectClient
from tests.integration.helpers import VAULT, connect_config, new_item, secret_ready
from tests.node.support import MEASURED, Chart, NodeEnv, container_pid, wait_for


def _uids(pid: int) -> list[str]:
    """Real, effective, saved and filesystem uid of a host process."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))


def _root_mount_options(pid: int) -> set[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


async def test_the_operator_pod_is_ready_non_root_read_only_and_syncs(
    node: NodeEnv, chart: Chart, namespace: str
) -> None:
    (pod,) = chart.ready_pods()
    MEASURED.update({f"node start: {k}": v for k, v in node.timings.items()})
    assert pod.spec.service_account_name == "opsync"
    operator = next(c for c in pod.spec.containers if c.name == "operator")
    assert operator.image == node.image.ref
    assert operator.liveness_probe.http_get.path == "/healthz"
    assert operator.readiness_probe.http_get.path == "/readyz"
    status = next(s for s in pod.status.container_statuses if s.name == "operator")
    assert status.ready and status.restart_count == 0

    pid = container_pid(node, pod)
    assert _uids(pid) == ["65532"] * 4
    assert "ro" in _root_mount_options(pid)

    async with ConnectClient(connect_config(node.connect)) as connect:
        item = await new_item(connect, username="app", password="s3cret")
    started = time.monotonic()
    node.kube.create_item(namespace, "synced", f"vaults/{VAULT}/items/{item.id}", within=30)
    wait_for(lambda: secret_ready(node.kube, namespace, "synced"), within=60, what="the item synced")
    MEASURED["item created -> Secret (pod operator)"] = time.monotonic() - started
    assert node.kube.secret_data(namespace, "synced") == {"username": b"app", "password": b"s3cret"}

    # Still Ready, never restarted by its liveness probe (past its initial delay of 15 s).
    wait_for(lambda: time.monotonic() - started > 1, within=5)
    (again,) = chart.ready_pods()
    assert next(s for s in again.status.container_statuses if s.name == "operator").restart_count == 0
