"""Every public ``KubeApi`` method with sample arguments, for the tests that must call them all:
the RBAC table (``test_helm_values``: which requests each makes) and the network-error test
(``test_kube_errors``: none lets a client error escape). A method missing here fails both."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from opsync.core.desired import DesiredSecret, ObjectRef, Owner, SecretState
from opsync.core.mapping import SecretData
from opsync.core.workloads import DAEMON_SET, DEPLOYMENT, ROLLOUT, STATEFUL_SET
from opsync.kube import KubeApi

OWNER = Owner("onepassword.com/v1", "OnePasswordItem", "i", "uid-i")
DESIRED = DesiredSecret("ns", "s", "Opaque", SecretData({"k": b"v"}), {}, {}, OWNER)
STATE = SecretState("ns", "s", "Opaque", SecretData({}), resource_version="1", uid="u")
LEASE = {"metadata": {"name": "l", "namespace": "ns"}, "spec": {}}

Call = Callable[[KubeApi], Awaitable[Any]]


async def _patch_every_kind(api: KubeApi) -> None:
    for kind in (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, ROLLOUT):
        await api.patch_workload(kind, "ns", "w", {})


async def _post_twice(api: KubeApi) -> None:
    """The same Event twice: posted, then its count raised."""
    for _ in range(2):
        await api.post_event(
            ObjectRef("v1", "Secret", "ns", "s", "u"), type_="Normal", reason="R", message="m"
        )


CALLS: dict[str, Call] = {
    "read_secret": lambda k: k.read_secret("ns", "s"),
    "create_secret": lambda k: k.create_secret(DESIRED),
    "replace_secret": lambda k: k.replace_secret(DESIRED, STATE),
    "set_owner_references": lambda k: k.set_owner_references(STATE, [OWNER]),
    "retain_secret": lambda k: k.retain_secret(STATE, [], "OnePasswordItem/x"),
    "clear_rollout_pending": lambda k: k.clear_rollout_pending("ns", "s", "f"),
    "delete_secret": lambda k: k.delete_secret("ns", "s", uid="u"),
    "post_event": lambda k: _post_twice(k),
    "namespace_annotations": lambda k: k.namespace_annotations("ns"),
    "read_lease": lambda k: k.read_lease("ns", "l"),
    "create_lease": lambda k: k.create_lease("ns", LEASE),
    "replace_lease": lambda k: k.replace_lease("ns", LEASE),
    "read_item": lambda k: k.read_item("ns", "i"),
    "patch_item_status": lambda k: k.patch_item_status("ns", "i", {}),
    "list_deployments": lambda k: k.list_deployments("ns"),
    "list_workloads": lambda k: k.list_workloads("ns"),
    "patch_workload": _patch_every_kind,
    "namespace_labels": lambda k: k.namespace_labels("ns"),
    "read_connection": lambda k: k.read_connection("ns", "c"),
    "read_cluster_connection": lambda k: k.read_cluster_connection("c"),
    "patch_connection_status": lambda k: k.patch_connection_status("ns", "c", {}),
    "patch_cluster_connection_status": lambda k: k.patch_cluster_connection_status("c", {}),
}


def public_methods() -> set[str]:
    """The coroutine methods of ``KubeApi`` meant for callers."""
    return {
        name
        for name, _ in inspect.getmembers(KubeApi, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
