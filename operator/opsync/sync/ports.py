"""The ports of the use cases: exactly what each one needs from Connect and from Kubernetes.

Why this module exists: the use cases in :mod:`opsync.sync` carry opsync's safety
rules (nothing written before everything was read, never touch a Secret opsync
does not own, write only on a difference, never change a Secret's type, …).
Typed against the concrete :class:`~opsync.kube.KubeApi` and
:class:`~opsync.connect.client.ConnectClient`, they could only be exercised
through a real API server. Typed against these :class:`~typing.Protocol`
classes instead, they say what they use, they load neither the ``kubernetes``
package nor ``httpx``, and tests drive them against in-memory stand-ins
(``tests/unit/fakes.py``) that enforce what the API server enforces.

The concrete classes satisfy the ports structurally (no inheritance): the kopf
layer passes a ``KubeApi`` and a ``ConnectClient`` where a port is expected and
``mypy --strict`` checks that they fit. A port lists only what a use case
calls: a method added here must exist, with a compatible signature, on the
concrete class.

* :class:`ItemSource`: reading items from Connect (``resolve``, ``reconcile``, ``poller``);
* :class:`SecretStore`: the Secrets the :class:`~opsync.sync.reconcile.Reconciler` reads and writes;
* :class:`WorkloadStore` and :class:`EventSink`, together :class:`RestartApi`: what the
  :class:`~opsync.sync.restarts.Restarter` lists, patches and reports;
* :class:`LeaseStore`: the Lease of the :class:`~opsync.sync.leader.LeaderElector`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import SecretBytes

from opsync.connect.models import FullItem, Item, Vault
from opsync.core.desired import DesiredSecret, ObjectRef, Owner, SecretState
from opsync.core.workloads import WorkloadKind


class ItemSource(Protocol):
    """Connect, read only: vaults, item overviews, whole items and their files."""

    async def list_vaults(self) -> list[Vault]:
        """Every vault the token can see (with its ``contentVersion``)."""
        ...

    async def find_vaults(self, title: str) -> list[Vault]:
        """Every vault named ``title``; may be several."""
        ...

    async def list_items(self, vault_id: str) -> list[Item]:
        """Overviews (id, title, version) of every item of a vault."""
        ...

    async def find_items(self, vault_id: str, title: str) -> list[Item]:
        """Overviews of every item of the vault titled ``title``; may be several."""
        ...

    async def get_item(self, vault_id: str, item_id: str) -> FullItem:
        """One whole item by id."""
        ...

    async def get_item_with_files(
        self, vault_id: str, item_id: str, *, item: FullItem | None = None
    ) -> tuple[FullItem, dict[str, SecretBytes]]:
        """An item (``item`` when already read) and the content of each of its files, by file id."""
        ...


class SecretStore(Protocol):
    """The Secrets of the cluster, as the Reconciler reads and writes them.

    Every write is guarded: a replace or patch by the resourceVersion read (a
    concurrent change gives a retryable 409 ``KubeError``), a delete by the uid.
    """

    async def read_secret(self, namespace: str, name: str) -> SecretState | None:
        """The Secret, or None when there is none."""
        ...

    async def create_secret(self, desired: DesiredSecret) -> str | None:
        """Create the Secret (409 if the name is taken); its uid."""
        ...

    async def replace_secret(self, desired: DesiredSecret, existing: SecretState) -> None:
        """Replace ``existing`` (as read) by ``desired``."""
        ...

    async def set_owner_references(self, existing: SecretState, references: list[Owner]) -> None:
        """Set the Secret's ownerReferences to exactly ``references``."""
        ...

    async def retain_secret(self, existing: SecretState, references: list[Owner], retained_from: str) -> None:
        """Leave the Secret behind: these owners, no managed label, a note of whose it was."""
        ...

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Delete the Secret if it is still the one with ``uid``; gone already is no error."""
        ...


class WorkloadStore(Protocol):
    """The workloads of a namespace and the namespace's own opinion on restarts."""

    async def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        """Every workload (Deployment, StatefulSet, DaemonSet, Argo Rollout), with kind and apiVersion."""
        ...

    async def patch_workload(
        self, kind: WorkloadKind, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        """Patch one workload (a 404 ``KubeError`` when it is gone)."""
        ...

    async def namespace_annotations(self, name: str) -> dict[str, str]:
        """A Namespace's annotations; ``{}`` when it cannot be read."""
        ...


class EventSink(Protocol):
    """Where Events go."""

    async def post_event(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None: ...


class RestartApi(WorkloadStore, EventSink, Protocol):
    """What the Restarter needs: the workloads, and Events on them and on the Secrets' owners."""


class LeaseStore(Protocol):
    """The ``coordination.k8s.io/v1`` Leases, as plain dicts."""

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease (``metadata.resourceVersion`` included), or None."""
        ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create it; a 409 ``KubeError`` when another replica created it first."""
        ...

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Replace it, guarded by the body's resourceVersion; a 409 ``KubeError`` on a lost race."""
        ...
