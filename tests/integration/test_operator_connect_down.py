"""Connect goes away: the Secret is left exactly as it was, status and an Event say why.

This module runs its own Connect server and operator (watching ``opd-*``), so killing that
Connect server disturbs no other test.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from tests.conftest import Cluster
from tests.integration.helpers import (
    VAULT,
    connect_config,
    eventually,
    make_namespace,
    new_item,
    secret_ready,
    start_connect,
    start_operator,
)

PREFIX = "opd-"


async def test_connect_down_leaves_the_secret_unchanged_and_says_why(
    cluster: Cluster,
    crds_installed: None,
    api_client: client.ApiClient,
    kube: Kube,
    tmp_path: Path,
) -> None:
    connect_process = start_connect(tmp_path / "connect")
    operator = None
    namespace = None
    try:
        operator = start_operator(cluster, connect_process, tmp_path / "operator", namespace_prefix=PREFIX)
        namespace = make_namespace(api_client, PREFIX)
        async with ConnectClient(connect_config(connect_process)) as connect:
            item = await new_item(connect, user="app", password="before-the-outage")
        kube.create_item(namespace, "outage", f"vaults/{VAULT}/items/{item.title}", labels={"v": "1"})
        await eventually(lambda: secret_ready(kube, namespace, "outage"))
        before = kube.secret(namespace, "outage")
        assert before is not None

        connect_process.stop()
        kube.patch_item(namespace, "outage", {"metadata": {"labels": {"v": "2"}}})

        def not_ready() -> dict[str, str] | None:
            condition = kube.ready(namespace, "outage")
            return condition if condition and condition["status"] == "False" else None

        condition = await eventually(not_ready)
        assert condition["reason"] == "ConnectUnavailable"
        assert "cannot reach 1Password Connect" in condition["message"]
        events = await eventually(
            lambda: [e for e in kube.events(namespace, "outage") if e.reason == "ConnectUnavailable"]
        )
        assert events[0].type == "Warning"

        after = kube.secret(namespace, "outage")
        assert after is not None
        assert after.metadata.resource_version == before.metadata.resource_version
        assert after.data == before.data and after.metadata.labels == before.metadata.labels
        assert operator.process.poll() is None, "the operator exited when Connect went away"

        # Drift repair needs no Connect: a Secret deleted during the outage comes back as it was.
        kube.core.delete_namespaced_secret("outage", namespace)
        await eventually(
            lambda: (
                kube.secret_data(namespace, "outage") == {"user": b"app", "password": b"before-the-outage"}
            )
        )
        assert operator.process.poll() is None

        # Connect comes back (same address, same data): the retry applies the change, Ready again.
        connect_process = connect_process.restart()
        await eventually(lambda: secret_ready(kube, namespace, "outage"), within=60)

        def relabelled() -> bool:
            secret = kube.secret(namespace, "outage")
            return secret is not None and secret.metadata.labels.get("v") == "2"

        await eventually(relabelled)
    finally:
        if namespace is not None:
            client.CoreV1Api(api_client).delete_namespace(namespace)
        if operator is not None:
            operator.stop()
        connect_process.stop()


async def test_an_outage_shows_in_the_fresh_condition_while_ready_stays_true(
    cluster: Cluster,
    crds_installed: None,
    api_client: client.ApiClient,
    kube: Kube,
    tmp_path: Path,
) -> None:
    """A synced item whose Secret is still right stays Ready=True during an outage; Fresh=False
    says Connect is failing (since when, and its last good check), one Warning Event says it
    once, and the condition goes when Connect answers again."""
    connect_process = start_connect(tmp_path / "connect")
    operator = None
    namespace = None
    try:
        operator = start_operator(
            cluster,
            connect_process,
            tmp_path / "operator",
            namespace_prefix="opf-",
            env={"POLLING_INTERVAL": "1"},
        )
        namespace = make_namespace(api_client, "opf-")
        async with ConnectClient(connect_config(connect_process)) as connect:
            item = await new_item(connect, password="fresh")
        kube.create_item(namespace, "fresh", f"vaults/{VAULT}/items/{item.id}")
        await eventually(lambda: secret_ready(kube, namespace, "fresh"))

        def fresh() -> dict[str, str] | None:
            conditions = (kube.item(namespace, "fresh").get("status") or {}).get("conditions") or []
            found = [c for c in conditions if c["type"] == "Fresh"]
            return found[0] if found else None

        assert fresh() is None  # no condition while Connect answers: a steady item costs nothing
        await eventually(lambda: operator.metric("opsync_polls_total") >= 2)  # a successful check

        connect_process.stop()
        condition = await eventually(fresh, within=30)
        assert (condition["status"], condition["reason"]) == ("False", "ConnectUnavailable")
        assert "last successful check" in condition["message"]
        assert secret_ready(kube, namespace, "fresh")  # the Secret is still right
        events = await eventually(
            lambda: [e for e in kube.events(namespace, "fresh") if e.reason == "ConnectUnavailable"]
        )
        assert events[0].type == "Warning"
        polls_during = operator.metric("opsync_polls_total")
        await eventually(lambda: operator.metric("opsync_polls_total") >= polls_during + 2, within=30)
        assert len([e for e in kube.events(namespace, "fresh") if e.reason == "ConnectUnavailable"]) == 1

        connect_process = connect_process.restart()
        await eventually(lambda: fresh() is None, within=30)
        assert secret_ready(kube, namespace, "fresh")
    finally:
        if namespace is not None:
            client.CoreV1Api(api_client).delete_namespace(namespace)
        if operator is not None:
            operator.stop()
        connect_process.stop()
