"""A rollout is owed from the write that changes a Secret's data until it is made: an operator
killed in between leaves the debt on the Secret, and the next start pays it, once.

Before: ten kills right after a Secret write lost all ten rollouts (the Secret held the new data,
the workloads kept running the old one, and nothing restarted them). The fault point
``OPSYNC_FAULT_POINT=exit-before-rollout`` makes the kill land in that window every time.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.core import desired
from opsync.core.workloads import RESTARTED_FOR
from tests.conftest import Cluster
from tests.integration.helpers import (
    VAULT,
    connect_config,
    deployment,
    eventually,
    make_namespace,
    new_item,
    pod_spec,
    secret_ready,
    set_field,
    start_connect,
    start_operator,
)

PREFIX = "olr-"


def template_annotations(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    live = kube.apps.read_namespaced_deployment(name, namespace)
    return dict(live.spec.template.metadata.annotations or {})


async def test_a_rollout_the_operator_was_killed_before_is_made_at_the_next_start_once(
    cluster: Cluster, crds_installed: None, api_client: client.ApiClient, kube: Kube, tmp_path: Path
) -> None:
    connect_process = start_connect(tmp_path / "connect")
    namespace = make_namespace(api_client, PREFIX)
    options = {"namespace_prefix": PREFIX}
    operator = start_operator(cluster, connect_process, tmp_path / "first", **options)
    try:
        async with ConnectClient(connect_config(connect_process)) as connect:
            item = await new_item(connect, password="v1")
            kube.create_item(
                namespace,
                "app-secret",
                f"vaults/{VAULT}/items/{item.id}",
                annotations={desired.AUTO_RESTART: "true"},
            )
            await eventually(lambda: secret_ready(kube, namespace, "app-secret"))
            kube.apps.create_namespaced_deployment(
                namespace, deployment("app", pod_spec=pod_spec("app-secret", "env"))
            )
            operator.stop()
            generation = kube.apps.read_namespaced_deployment("app", namespace).metadata.generation

            # The next operator dies right after writing the new data, before any rollout.
            operator = start_operator(
                cluster,
                connect_process,
                tmp_path / "killed",
                env={"OPSYNC_FAULT_POINT": "exit-before-rollout"},
                **options,
            )
            await set_field(connect, item, "password", "v2")
            kube.patch_item(
                namespace, "app-secret", {"metadata": {"annotations": {"opsync.io/force-sync": "1"}}}
            )
            await eventually(lambda: operator.process.poll() is not None, within=30)
        assert kube.secret_data(namespace, "app-secret") == {"password": b"v2"}
        secret = kube.secret(namespace, "app-secret")
        assert secret is not None and desired.ROLLOUT_PENDING in secret.metadata.annotations
        assert kube.apps.read_namespaced_deployment("app", namespace).metadata.generation == generation

        # The next start pays the debt: one rollout, the marker cleared.
        operator = start_operator(cluster, connect_process, tmp_path / "next", **options)
        await eventually(lambda: RESTARTED_FOR in template_annotations(kube, namespace, "app"), within=30)

        def cleared() -> bool:
            found = kube.secret(namespace, "app-secret")
            return found is not None and desired.ROLLOUT_PENDING not in (found.metadata.annotations or {})

        await eventually(cleared)
        rolled = kube.apps.read_namespaced_deployment("app", namespace).metadata.generation
        assert rolled == generation + 1
        record = template_annotations(kube, namespace, "app")[RESTARTED_FOR]

        # And only once: another start finds nothing owed.
        operator.stop()
        operator = start_operator(cluster, connect_process, tmp_path / "again", **options)
        assert operator.wait_log("Handler 'sync_item' succeeded")  # it resumed the item
        assert kube.apps.read_namespaced_deployment("app", namespace).metadata.generation == rolled
        assert template_annotations(kube, namespace, "app")[RESTARTED_FOR] == record
    finally:
        operator.stop()
        client.CoreV1Api(api_client).delete_namespace(namespace)
        connect_process.stop()
