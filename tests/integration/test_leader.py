"""Leader election: of two replicas sharing a Lease only one acts; the other takes over."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, config

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.controlplane import ControlPlane
from opsync.tooling.harness import ConnectServerProcess
from tests.conftest import REPO, Cluster
from tests.integration.helpers import (
    VAULT,
    eventually,
    new_item,
    running_operator,
    secret_ready,
    set_field,
    watched_namespace,
)

RESTARTS = 10


def lease(api_client: client.ApiClient, name: str) -> dict[str, Any]:
    body = client.CoordinationV1Api(api_client).read_namespaced_lease(name, "default")
    return {"holder": body.spec.holder_identity, "transitions": body.spec.lease_transitions}


async def test_only_the_leader_acts_and_a_standby_takes_over(
    cluster: Cluster,
    crds_installed: None,
    connect_server: ConnectServerProcess,
    api_client: client.ApiClient,
    kube: Kube,
    connect: ConnectClient,
    tmp_path: Path,
) -> None:
    name = f"opsync-ha-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {
        "namespace_prefix": "opl-",
        "env": {"OPSYNC_LEASE_NAME": name, "POLLING_INTERVAL": "1"},
    }
    item = await new_item(connect, password="ha")
    with running_operator(cluster, connect_server, tmp_path / "a", **options) as leader:
        held = lease(api_client, name)
        assert held["holder"]
        with (
            running_operator(cluster, connect_server, tmp_path / "b", standby=True, **options) as standby,
            watched_namespace(api_client, leader) as namespace,
        ):
            kube.create_item(namespace, "first", f"vaults/{VAULT}/items/{item.title}")
            await eventually(lambda: secret_ready(kube, namespace, "first"))
            assert standby.metric("opsync_leader") == 0
            assert leader.metric("opsync_leader") == 1
            assert standby.metric("opsync_polls_total") == 0
            assert "OnePasswordItem" not in standby.logs()

            stopping = time.monotonic()
            leader.stop()  # a clean stop hands the Lease over at once
            # kopf's own SIGTERM handler left a task of its waiting, and it waited 5 s for it.
            assert time.monotonic() - stopping < 4, "a clean stop took kopf's 5 s hung-task wait"
            assert leader.process.returncode == 0
            await eventually(lambda: "leading: holding Lease" in standby.logs(), within=20)
            after = lease(api_client, name)
            assert after["holder"] != held["holder"]
            assert after["transitions"] == held["transitions"] + 1
            kube.create_item(namespace, "second", f"vaults/{VAULT}/items/{item.title}")
            await eventually(lambda: secret_ready(kube, namespace, "second"))
            await eventually(lambda: standby.metric("opsync_polls_total") >= 1)


def test_a_taken_metrics_port_stops_start_up_with_one_message(
    cluster: Cluster, connect_server: ConnectServerProcess
) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "opsync", "run", "--metrics-bind-address", f"127.0.0.1:{port}"],
            env={
                **os.environ,
                "KUBECONFIG": str(cluster.kubeconfig),
                "OP_CONNECT_HOST": connect_server.url,
                "OP_CONNECT_TOKEN": connect_server.token,
                "OPSYNC_HEALTH_PROBE_BIND_ADDRESS": "0",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "--metrics-bind-address" in result.stderr
    assert "Traceback" not in result.stderr


async def test_leader_and_standby_ride_out_api_server_restarts(
    connect_server: ConnectServerProcess, connect: ConnectClient, tmp_path: Path
) -> None:
    """The API server SIGKILLed and started again 10 times, a few seconds down each time: the
    leader keeps leading (its renew deadline is not reached), the standby keeps waiting, neither
    exits nor logs a traceback, and the leader still syncs afterwards. A urllib3 error from the
    Lease read used to escape the Kubernetes layer and crash both replicas."""
    item = await new_item(connect, password="before")
    with ControlPlane() as plane:
        cluster = Cluster(plane.kubeconfig, plane)
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        kube = Kube(api)
        kube.install_crds(sorted((REPO / "crds").glob("*.yaml")))
        name = f"opsync-blips-{uuid.uuid4().hex[:8]}"
        # Renewals every 2 s, so each outage meets some; a renew deadline (10 s) longer than each.
        options: dict[str, Any] = {
            "namespace_prefix": "opb-",
            "env": {"OPSYNC_LEASE_NAME": name, "OPSYNC_LEASE_DURATION": "15", "POLLING_INTERVAL": "1"},
        }
        with (
            running_operator(cluster, connect_server, tmp_path / "a", **options) as leader,
            running_operator(cluster, connect_server, tmp_path / "b", standby=True, **options) as standby,
            watched_namespace(api, leader) as namespace,
        ):
            kube.create_item(namespace, "blips", f"vaults/{VAULT}/items/{item.id}")
            await eventually(lambda: secret_ready(kube, namespace, "blips"))
            holder = lease(api, name)

            for _ in range(RESTARTS):
                plane.restart_apiserver(down=3.0)
                leader.check()
                standby.check()
            for replica in (leader, standby):  # each did meet the outages
                assert "leader election on Lease" in replica.logs(), replica.tail()

            # Still the same leader, still acting: a change reaches the Secret.
            assert lease(api, name)["holder"] == holder["holder"]
            assert (leader.metric("opsync_leader"), standby.metric("opsync_leader")) == (1, 0)
            await set_field(connect, item, "password", "after")
            await eventually(
                lambda: kube.secret_data(namespace, "blips").get("password") == b"after", within=30
            )
            for replica in (leader, standby):
                replica.check()
                assert "Traceback" not in replica.logs(), replica.tail()
            assert "lost Lease" not in leader.logs()
        api.close()
