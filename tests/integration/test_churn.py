"""Items deleted while they are being created: deletion wins, nothing is left behind, and drift
repair never brings back the Secret of a deleted owner.

Before: creating 100 items and deleting them at once left 23-24 Secrets per cycle, each owned
by a deleted item (deleted before kopf's finalizer was on it, so no delete handler ran), and
drift repair restored such a Secret when the garbage collector deleted it. This test cluster
has no garbage collector, so whatever is left behind stays to be counted.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.core import desired
from opsync.tooling.harness import OperatorProcess
from tests.integration.helpers import VAULT, eventually, new_item, secret_ready

CYCLES = 5
ITEMS = 100


def managed(kube: Kube, namespace: str, prefix: str) -> list[str]:
    secrets = kube.core.list_namespaced_secret(namespace, label_selector=f"{desired.MANAGED_LABEL}=true")
    return [s.metadata.name for s in secrets.items if s.metadata.name.startswith(prefix)]


async def test_items_deleted_while_being_created_leave_no_secret_behind(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, password="churn")
    path = f"vaults/{VAULT}/items/{item.id}"
    restored_before = operator.logs().count("restored Secret")
    for cycle in range(CYCLES):
        names = [f"churn-{cycle}-{n}" for n in range(ITEMS)]
        with ThreadPoolExecutor(8) as pool:
            # Each deleted right after it is created: some before kopf's finalizer is on them,
            # some while their first sync runs, some after.
            list(
                pool.map(
                    lambda name: (
                        kube.create_item(op_namespace, name, path),
                        kube.delete_item(op_namespace, name),
                    ),
                    names,
                )
            )

        def all_gone(cycle: int = cycle) -> bool:
            return not [
                i for i in kube.items(op_namespace) if i["metadata"]["name"].startswith(f"churn-{cycle}-")
            ]

        await eventually(all_gone, within=120)
    # Whatever sync was in flight has ended by the time the last item is gone and its Secret
    # deleted; give drift repair (0.2 s debounce here) time to act if it wrongly would.
    await eventually(lambda: not managed(kube, op_namespace, "churn-"), within=30)
    await asyncio.sleep(2)
    left = managed(kube, op_namespace, "churn-")
    assert left == [], f"{len(left)} Secrets left behind: {left[:5]}"
    assert operator.logs().count("restored Secret") == restored_before


async def test_the_secret_of_a_deleted_item_of_the_same_name_is_adopted(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    """An item deleted and created again before the garbage collector removed its Secret."""
    item = await new_item(connect, password="adopt")
    kube.core.create_namespaced_secret(
        op_namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="again",
                labels={desired.MANAGED_LABEL: "true"},
                owner_references=[
                    client.V1OwnerReference(
                        api_version="onepassword.com/v1",
                        kind="OnePasswordItem",
                        name="again",
                        uid="00000000-0000-0000-0000-00000000dead",
                    )
                ],
            ),
            string_data={"password": "stale"},
        ),
    )
    kube.create_item(op_namespace, "again", f"vaults/{VAULT}/items/{item.id}")
    await eventually(lambda: secret_ready(kube, op_namespace, "again"))
    live = kube.item(op_namespace, "again")["metadata"]["uid"]
    secret = kube.secret(op_namespace, "again")
    assert secret is not None
    assert [ref.uid for ref in secret.metadata.owner_references] == [live]
    assert kube.secret_data(op_namespace, "again") == {"password": b"adopt"}
